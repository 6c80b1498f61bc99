{{- define "firehose.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; selector labels name the role as the component. */}}
{{- define "firehose.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "firehose.release" . }}
{{- end -}}

{{- define "firehose.release" -}}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "firehose.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "firehose.secretName" -}}
{{- .Values.credentials.existingSecret | default (include "firehose.fullname" .) -}}
{{- end -}}

{{/* The Redis URL, with $(REDIS_PASSWORD) after the scheme when redis.auth is set. */}}
{{- define "firehose.redisURL" -}}
{{- if .Values.redis.auth -}}
{{- $u := splitn "://" 2 .Values.redis.url -}}
{{- printf "%s://:$(REDIS_PASSWORD)@%s" $u._0 $u._1 -}}
{{- else -}}
{{- .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{/* Environment of every firehose process: the connections, from the Secret. */}}
{{- define "firehose.env" -}}
- name: FIREHOSE_POSTGRES_URL
  valueFrom:
    secretKeyRef: {name: {{ include "firehose.secretName" . }}, key: postgres-url}
{{- if .Values.redis.auth }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "firehose.secretName" . }}, key: redis-password}
{{- end }}
- name: FIREHOSE_REDIS_URL
  value: {{ include "firehose.redisURL" . | quote }}
{{- end -}}

{{/*
The pod template of a role. Parameters: root (the chart's context), component (its name),
values (the role's values), edge (true for a role behind a Service: it gets --shutdown-delay),
args (serve's flags for the role), ports (containerPorts),
probePort (the port name of /livez and /readyz), probeScheme (HTTPS when that port serves
TLS; default HTTP), env (more environment, YAML), files (keys of the Secret mounted under
/etc/firehose/secrets), volumes (more read-only mounts, from firehose.edgeTLS).
With console.enabled every process gets the console's token from the Secret's admin-token key
(FIREHOSE_ADMIN_TOKEN); its --admin-addr is the role's.
*/}}
{{- define "firehose.pod" -}}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "firehose.selector" . | nindent 4 }}
    {{- include "firehose.release" $root | nindent 4 }}
  annotations:
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    {{- with $root.Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ add $root.Values.shutdownDelaySeconds $root.Values.shutdownTimeoutSeconds 5 }}
  containers:
    - name: firehose
      image: {{ printf "%s:%s" $root.Values.image.repository ($root.Values.image.tag | default $root.Chart.AppVersion) | quote }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args:
        - serve
        - --config=/etc/firehose/firehose.yaml
        {{- range .args }}
        - {{ . | quote }}
        {{- end }}
        {{- if .edge }}
        - --shutdown-delay={{ $root.Values.shutdownDelaySeconds }}s
        {{- end }}
        - --shutdown-timeout={{ $root.Values.shutdownTimeoutSeconds }}s
        {{- with .values.memoryLimit }}
        - --memory-limit={{ . }}
        {{- end }}
        {{- range .values.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      env:
        {{- include "firehose.env" $root | nindent 8 }}
        {{- with .env }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- if $root.Values.console.enabled }}
        - name: FIREHOSE_ADMIN_TOKEN
          valueFrom:
            secretKeyRef: {name: {{ include "firehose.secretName" $root }}, key: admin-token}
        {{- end }}
      ports:
        {{- toYaml .ports | nindent 8 }}
      readinessProbe:
        httpGet: {path: /readyz, port: {{ .probePort }}, scheme: {{ .probeScheme | default "HTTP" }}}
        periodSeconds: 2
        failureThreshold: 2
      livenessProbe:
        httpGet: {path: /livez, port: {{ .probePort }}, scheme: {{ .probeScheme | default "HTTP" }}}
        periodSeconds: 10
        failureThreshold: 3
      startupProbe:
        # /livez answers once the process listens: after connecting, applying the schema at start
        httpGet: {path: /livez, port: {{ .probePort }}, scheme: {{ .probeScheme | default "HTTP" }}}
        periodSeconds: 2
        failureThreshold: 45
      resources:
        {{- toYaml .values.resources | nindent 8 }}
      volumeMounts:
        - {name: config, mountPath: /etc/firehose/firehose.yaml, subPath: firehose.yaml, readOnly: true}
        {{- if .files }}
        - {name: secrets, mountPath: /etc/firehose/secrets, readOnly: true}
        {{- end }}
        {{- range .volumes }}
        - {name: {{ .name }}, mountPath: {{ .mountPath }}, readOnly: true}
        {{- end }}
  volumes:
    - name: config
      configMap: {name: {{ include "firehose.fullname" $root }}}
    {{- if .files }}
    - name: secrets
      secret:
        secretName: {{ include "firehose.secretName" $root }}
        items:
          {{- range .files }}
          - {key: {{ . }}, path: {{ . }}}
          {{- end }}
    {{- end }}
    {{- range .volumes }}
    - name: {{ .name }}
      {{- if .secret }}
      secret:
        secretName: {{ .secret }}
      {{- else }}
      configMap:
        name: {{ .configMap }}
      {{- end }}
        items:
          {{- range .keys }}
          - {key: {{ . | quote }}, path: {{ . | quote }}}
          {{- end }}
    {{- end }}
  {{- with $root.Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* A role's PodDisruptionBudget. */}}
{{- define "firehose.pdb" -}}
{{- if .root.Values.podDisruptionBudget.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "firehose.fullname" .root }}-{{ .component }}
  labels:
    {{- include "firehose.labels" .root | nindent 4 }}
spec:
  maxUnavailable: {{ .root.Values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "firehose.selector" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/*
The TLS files of an edge (root, component: broker or httpgw, flag: mqtt or http) from its
values tls (a Secret with tls.crt and tls.key), clientCA and crl ({secret or configMap, key}),
as JSON: {"args": serve's --<flag>-tls-* flags, "volumes": firehose.pod's volumes}. Each is
mounted as a directory, without subPath, so that a changed Secret or ConfigMap reaches the
file (the kubelet updates it within its sync period); serve re-reads the CRL when it changes.
*/}}
{{- define "firehose.edgeTLS" -}}
{{- $v := index .root.Values .component -}}
{{- $args := list -}}
{{- $volumes := list -}}
{{- if $v.tls -}}
{{- $args = append $args (printf "--%s-tls-cert=/etc/firehose/tls/tls.crt" .flag) -}}
{{- $args = append $args (printf "--%s-tls-key=/etc/firehose/tls/tls.key" .flag) -}}
{{- $volumes = append $volumes (dict "name" "tls" "mountPath" "/etc/firehose/tls" "secret" $v.tls "keys" (list "tls.crt" "tls.key")) -}}
{{- end -}}
{{- range $name := list "clientCA" "crl" -}}
{{- $ref := index $v $name | default dict -}}
{{- $what := printf "%s.%s" $.component $name -}}
{{- if or $ref.secret $ref.configMap -}}
{{- if and $ref.secret $ref.configMap }}{{ fail (printf "%s: give secret or configMap, not both" $what) }}{{ end -}}
{{- if not $ref.key }}{{ fail (printf "%s: key names the file in %s" $what ($ref.secret | default $ref.configMap)) }}{{ end -}}
{{- if not $v.tls }}{{ fail (printf "%s needs %s.tls: client certificates are asked for on the TLS listener" $what $.component) }}{{ end -}}
{{- if and (eq $name "crl") (not (or $v.clientCA.secret $v.clientCA.configMap)) }}{{ fail (printf "%s needs %s.clientCA: the list revokes certificates of its CAs" $what $.component) }}{{ end -}}
{{- $dir := ternary "/etc/firehose/client-ca" "/etc/firehose/crl" (eq $name "clientCA") -}}
{{- $args = append $args (printf "--%s-tls-%s=%s/%s" $.flag (ternary "client-ca" "crl" (eq $name "clientCA")) $dir $ref.key) -}}
{{- $volumes = append $volumes (dict "name" (ternary "client-ca" "crl" (eq $name "clientCA")) "mountPath" $dir "secret" $ref.secret "configMap" $ref.configMap "keys" (list $ref.key)) -}}
{{- end -}}
{{- end -}}
{{- dict "args" $args "volumes" $volumes | toJson -}}
{{- end -}}
