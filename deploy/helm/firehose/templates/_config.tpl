{{/* The --config file every process reads: `config` and the Redis keys of `redis`. */}}
{{- define "firehose.configFile" -}}
{{- $redis := dict "redis-cluster" "auto" -}}
{{- if eq .Values.redis.mode "cluster" }}{{ $_ := set $redis "redis-cluster" "yes" }}
{{- else if eq .Values.redis.mode "sentinel" }}
{{- $_ := set $redis "redis-cluster" "no" }}
{{- $_ := set $redis "redis-sentinel-master" (required "redis.sentinelMaster names the master of redis.mode sentinel" .Values.redis.sentinelMaster) }}
{{- else if ne .Values.redis.mode "single" }}{{ fail (printf "redis.mode %q: want single, sentinel or cluster" .Values.redis.mode) }}
{{- end }}
{{- $_ := set $redis "redis-min-replicas" .Values.redis.minReplicas -}}
{{ merge $redis .Values.config | toYaml }}
{{- end -}}
