package helm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"sigs.k8s.io/yaml"
)

const chartDir = "firehose"

// valueSet is a deployment the chart is rendered for.
type valueSet struct {
	name   string
	values string
	// secret is the data of credentials.existingSecret, which the chart
	// does not render.
	secret map[string]string
	// secrets and configMaps are the other objects of the user's the values
	// name (TLS certificates, CAs, CRLs), by name.
	secrets, configMaps map[string]map[string]string
	// console says whether the web console is on.
	console bool
}

// valueSets are the deployments the chart is rendered for: its defaults with a
// single Redis, Sentinel with every credential the chart makes a Secret of, a
// Redis Cluster with a Secret of the user's and subscribers, the console with
// the chart's Secret and with the user's, and the edges over TLS with device
// certificates. %m is replaced by a line of `firehose mqttpasswd`, %k by one of
// `firehose apikey`, and in the data of external Secrets and ConfigMaps %cert,
// %key, %ca and %crl by the PEM of a server certificate, its key, the CA of
// device certificates and that CA's revocation list.
var valueSets = []valueSet{
	{name: "single", values: `
credentials: {postgresURL: "postgres://firehose:pw@pg.example:5432/firehose?sslmode=require"}
`},
	{name: "sentinel", values: `
redis: {mode: sentinel, url: "redis://sentinel-0:26379/0?addr=sentinel-1:26379&addr=sentinel-2:26379", sentinelMaster: mymaster, auth: true, minReplicas: 1}
credentials:
  postgresURL: "postgres://firehose:pw@pg.example:5432/firehose"
  redisPassword: s3cret
  mqttAuth: "%m"
  httpAPIKeys: "%k"
broker: {auth: file, service: {type: LoadBalancer}}
httpgw: {apiKeys: true}
serviceMonitor: {enabled: true}
config: {shards: 12, dedup: id, retention: 90d}
`},
	{name: "cluster", values: `
redis: {mode: cluster, url: "redis://redis-0.redis:6379?addr=redis-1.redis:6379&addr=redis-2.redis:6379", auth: true, minReplicas: 1}
credentials: {existingSecret: firehose-credentials}
broker: {auth: postgres, replicas: 3, extraArgs: ["--mqtt-max-clients=20000"]}
httpgw: {replicas: 4}
bridge: {replicas: 3}
subscriber: {enabled: true, broker: "tcp://mosquitto:1883", username: firehose, password: true, topics: [plant/#]}
podDisruptionBudget: {maxUnavailable: 2}
`, secret: map[string]string{
		"postgres-url":       "postgres://firehose:pw@pg.example:5432/firehose",
		"redis-password":     "s3cret",
		"subscribe-password": "broker-pw",
	}},
	{name: "console", console: true, values: `
credentials: {postgresURL: "postgres://firehose:pw@pg.example:5432/firehose", adminToken: 0123456789abcdef}
console: {enabled: true}
subscriber: {enabled: true, broker: "tcp://mosquitto:1883"}
serviceMonitor: {enabled: true}
`},
	{name: "console existing secret", console: true, values: `
credentials: {existingSecret: firehose-credentials}
console: {enabled: true}
subscriber: {enabled: true, broker: "tcp://mosquitto:1883"}
`, secret: map[string]string{
		"postgres-url": "postgres://firehose:pw@pg.example:5432/firehose",
		"admin-token":  "0123456789abcdef",
	}},
	{name: "tls", values: `
credentials: {postgresURL: "postgres://firehose:pw@pg.example:5432/firehose"}
broker:
  auth: postgres
  plainMQTT: false
  tls: mqtt-server-tls
  clientCA: {configMap: fleet-ca, key: ca.pem}
  crl: {secret: fleet-crl}
httpgw:
  tls: gw-server-tls
  clientCA: {secret: mqtt-server-tls, key: ca.crt}
  crl: {configMap: fleet-ca, key: crl.pem}
  deviceAuth: mqtt
serviceMonitor: {enabled: true}
`, secrets: map[string]map[string]string{
		"mqtt-server-tls": {"tls.crt": "%cert", "tls.key": "%key", "ca.crt": "%ca"},
		"gw-server-tls":   {"tls.crt": "%cert", "tls.key": "%key"},
		"fleet-crl":       {"crl.pem": "%crl"},
	}, configMaps: map[string]map[string]string{
		"fleet-ca": {"ca.pem": "%ca", "crl.pem": "%crl"},
	}},
	{name: "tls file auth console", console: true, values: `
credentials:
  postgresURL: "postgres://firehose:pw@pg.example:5432/firehose"
  mqttAuth: "%m"
  httpAPIKeys: "%k"
  adminToken: 0123456789abcdef
console: {enabled: true}
broker: {auth: file, tls: server-tls, clientCA: {secret: server-tls, key: ca.crt}, crl: {secret: server-tls, key: crl.pem}}
httpgw: {tls: server-tls, clientCA: {secret: server-tls, key: ca.crt}, crl: {secret: server-tls, key: crl.pem}, deviceAuth: mqtt, apiKeys: true}
bridge: {enabled: false}
serviceMonitor: {enabled: true, tlsConfig: {serverName: gw.example.com, ca: {secret: {name: server-tls, key: ca.crt}}}}
`, secrets: map[string]map[string]string{
		"server-tls": {"tls.crt": "%cert", "tls.key": "%key", "ca.crt": "%ca", "crl.pem": "%crl"},
	}},
}

func TestChartRendersValidObjects(t *testing.T) {
	bin := firehoseBinary(t)
	help := map[string]commandHelp{"serve": helpOf(t, bin, "serve"), "migrate": helpOf(t, bin, "migrate")}
	fx := newFixtures(t, bin)

	roles := map[string]bool{}
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			objs, secrets, configMaps := fx.render(t, vs)
			checkServices(t, objs)
			for _, o := range objs {
				name, pod, ok := podOf(o)
				if !ok {
					continue
				}
				t.Run(name, func(t *testing.T) {
					checkProbes(t, pod)
					checkMounts(t, pod)
					checkConsole(t, pod, vs.console, configMaps)
					for _, r := range checkProcess(t, bin, help, pod, name+"-0", configMaps, secrets) {
						roles[r] = true
					}
				})
			}
		})
	}
	for _, r := range []string{"broker", "httpgw", "bridge", "subscriber"} {
		if !roles[r] {
			t.Errorf("no value set runs a process with the %s role", r)
		}
	}
}

// TestChartRefusesIncompleteValues checks that values the chart cannot deploy
// stop the rendering with a message, not a broken release.
func TestChartRefusesIncompleteValues(t *testing.T) {
	for _, tc := range []struct{ name, values, want string }{
		{name: "no postgres", values: "{}", want: "credentials.postgresURL"},
		{name: "unknown redis mode", values: `{credentials: {postgresURL: "postgres://h/db"}, redis: {mode: replica}}`, want: `redis.mode "replica"`},
		{name: "sentinel without master", values: `{credentials: {postgresURL: "postgres://h/db"}, redis: {mode: sentinel}}`, want: "redis.sentinelMaster"},
		{name: "subscriber without broker", values: `{credentials: {postgresURL: "postgres://h/db"}, subscriber: {enabled: true}}`, want: "subscriber.broker"},
		{name: "auth file without lines", values: `{credentials: {postgresURL: "postgres://h/db"}, broker: {auth: file}}`, want: "credentials.mqttAuth"},
		{name: "console without token", values: `{credentials: {postgresURL: "postgres://h/db"}, console: {enabled: true}}`, want: "console.enabled needs credentials.adminToken"},
		{name: "client CA without TLS", values: `{credentials: {postgresURL: "postgres://h/db"}, broker: {clientCA: {secret: ca}}}`, want: "broker.clientCA needs broker.tls"},
		{name: "CRL without client CA", values: `{credentials: {postgresURL: "postgres://h/db"}, httpgw: {tls: gw-tls, crl: {configMap: crl}}}`, want: "httpgw.crl needs httpgw.clientCA"},
		{name: "client CA in two places", values: `{credentials: {postgresURL: "postgres://h/db"}, broker: {tls: t, clientCA: {secret: ca, configMap: ca}}}`, want: "broker.clientCA: give secret or configMap, not both"},
		{name: "CRL without key", values: `{credentials: {postgresURL: "postgres://h/db"}, httpgw: {tls: t, clientCA: {secret: ca}, crl: {secret: crl, key: ""}}}`, want: "httpgw.crl: key names the file in crl"},
		{name: "no MQTT listener", values: `{credentials: {postgresURL: "postgres://h/db"}, broker: {plainMQTT: false}}`, want: "broker.plainMQTT false needs broker.tls"},
		{name: "device auth without credentials", values: `{credentials: {postgresURL: "postgres://h/db"}, httpgw: {deviceAuth: mqtt}}`, want: "httpgw.deviceAuth mqtt checks the devices' credentials of broker.auth"},
		{name: "unknown device auth", values: `{credentials: {postgresURL: "postgres://h/db"}, broker: {auth: postgres}, httpgw: {deviceAuth: basic}}`, want: `httpgw.deviceAuth "basic"`},
		{name: "device auth file without lines", values: `{credentials: {postgresURL: "postgres://h/db"}, broker: {enabled: false, auth: file}, httpgw: {deviceAuth: mqtt}}`, want: "credentials.mqttAuth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := renderText(tc.values)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("render error %v, want one naming %s", err, tc.want)
			}
		})
	}
}

// fixtures fill the placeholders of the value sets: credentials lines the
// binary makes, and the PEM files of a PKI.
type fixtures struct{ values, files *strings.Replacer }

func newFixtures(t *testing.T, bin string) fixtures {
	t.Helper()
	mqttLine := runBin(t, bin, "dev-1\n", "mqttpasswd", "dev-1")
	keyOut := strings.Split(runBin(t, bin, "", "apikey", "gw-1"), "\n")
	apiKeyLine := strings.TrimSpace(keyOut[len(keyOut)-1])
	pki := newPKI(t)
	return fixtures{
		values: strings.NewReplacer("%m", strings.TrimSpace(mqttLine), "%k", apiKeyLine),
		files:  strings.NewReplacer("%cert", pki.cert, "%key", pki.key, "%ca", pki.ca, "%crl", pki.crl),
	}
}

// render renders a value set with its placeholders filled, and returns its
// objects and the data of the Secrets and ConfigMaps its pods read by name:
// the release's and the user's.
func (f fixtures) render(t *testing.T, vs valueSet) (objs []any, secrets, configMaps map[string]map[string]string) {
	t.Helper()
	objs = render(t, f.values.Replace(vs.values))
	external := func(objs map[string]map[string]string) map[string]map[string]string {
		out := map[string]map[string]string{}
		for name, data := range objs {
			out[name] = map[string]string{}
			for k, v := range data {
				out[name][k] = f.files.Replace(v)
			}
		}
		return out
	}
	secrets, configMaps = external(vs.secrets), external(vs.configMaps)
	secrets["firehose-credentials"] = vs.secret
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.Secret:
			secrets[o.Name] = o.StringData
		case *corev1.ConfigMap:
			configMaps[o.Name] = o.Data
		}
	}
	return objs, secrets, configMaps
}

// renderText renders the chart as `helm install fh` would, hooks included, into
// one document stream.
func renderText(values string) (string, error) {
	ch, err := loader.Load(chartDir)
	if err != nil {
		return "", fmt.Errorf("load chart: %w", err)
	}
	vals, err := common.ReadValues([]byte(values))
	if err != nil {
		return "", fmt.Errorf("read values: %w", err)
	}
	top, err := util.ToRenderValues(ch, vals, common.ReleaseOptions{Name: "fh", Namespace: "iot", IsInstall: true, Revision: 1}, nil)
	if err != nil {
		return "", fmt.Errorf("values: %w", err)
	}
	files, err := engine.Render(ch, top)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if strings.HasSuffix(name, ".yaml") {
			fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", name, files[name])
		}
	}
	return b.String(), nil
}

var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, policyv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// serviceMonitor is the part of the Prometheus Operator's type the chart
// writes: decoding strictly into it refuses any other field.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port      string `json:"port"`
			Path      string `json:"path"`
			Interval  string `json:"interval"`
			Scheme    string `json:"scheme,omitempty"`
			TLSConfig *struct {
				InsecureSkipVerify bool   `json:"insecureSkipVerify,omitempty"`
				ServerName         string `json:"serverName,omitempty"`
				CA                 *struct {
					Secret    *corev1.SecretKeySelector    `json:"secret,omitempty"`
					ConfigMap *corev1.ConfigMapKeySelector `json:"configMap,omitempty"`
				} `json:"ca,omitempty"`
			} `json:"tlsConfig,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// render renders the chart and decodes each document strictly (an unknown or
// duplicate field is an error) into its Kubernetes API type.
func render(t *testing.T, values string) []any {
	t.Helper()
	text, err := renderText(values)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	dec := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme, json.SerializerOptions{Yaml: true, Strict: true})
	var objs []any
	for _, doc := range strings.Split(text, "\n---\n") {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^#.*$`).ReplaceAllString(strings.TrimPrefix(doc, "---\n"), "")) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("not YAML: %v\n%s", err, doc)
		}
		if tm.Kind == "ServiceMonitor" {
			var sm serviceMonitor
			if err := yaml.UnmarshalStrict([]byte(doc), &sm); err != nil || sm.APIVersion != "monitoring.coreos.com/v1" {
				t.Errorf("ServiceMonitor %s: %v\n%s", sm.Name, err, doc)
			}
			objs = append(objs, &sm)
			continue
		}
		obj, _, err := dec.Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Errorf("%s: %v\n%s", tm.Kind, err, doc)
			continue
		}
		objs = append(objs, obj)
	}
	if len(objs) == 0 {
		t.Fatal("the chart rendered no object")
	}
	return objs
}

// podOf is the pod template of a workload.
func podOf(o any) (string, corev1.PodTemplateSpec, bool) {
	switch o := o.(type) {
	case *appsv1.Deployment:
		return o.Name, o.Spec.Template, true
	case *appsv1.StatefulSet:
		return o.Name, o.Spec.Template, true
	case *batchv1.Job:
		return o.Name, o.Spec.Template, true
	}
	return "", corev1.PodTemplateSpec{}, false
}

// checkServices checks that every Service, PodDisruptionBudget and workload
// selector selects pods of the release, a Service's target ports are ports of
// those pods, the ServiceMonitor's ports are ports of Services, and a
// StatefulSet's Service is there.
func checkServices(t *testing.T, objs []any) {
	t.Helper()
	var pods []corev1.PodTemplateSpec
	for _, o := range objs {
		name, pod, ok := podOf(o)
		if !ok {
			continue
		}
		pods = append(pods, pod)
		var sel *metav1.LabelSelector
		switch o := o.(type) {
		case *appsv1.Deployment:
			sel = o.Spec.Selector
		case *appsv1.StatefulSet:
			sel = o.Spec.Selector
		}
		if sel != nil && !labels.SelectorFromSet(sel.MatchLabels).Matches(labels.Set(pod.Labels)) {
			t.Errorf("%s: its selector %v does not select its pods %v", name, sel.MatchLabels, pod.Labels)
		}
	}
	selected := func(sel map[string]string) []corev1.PodTemplateSpec {
		var out []corev1.PodTemplateSpec
		for _, p := range pods {
			if labels.SelectorFromSet(sel).Matches(labels.Set(p.Labels)) {
				out = append(out, p)
			}
		}
		return out
	}
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.Service:
			ps := selected(o.Spec.Selector)
			if len(ps) == 0 {
				t.Errorf("Service %s selects no pod", o.Name)
				continue
			}
			for _, sp := range o.Spec.Ports {
				for _, p := range ps {
					if !slices.ContainsFunc(p.Spec.Containers[0].Ports, func(cp corev1.ContainerPort) bool { return cp.Name == sp.TargetPort.String() }) {
						t.Errorf("Service %s: target port %s is not a port of its pods", o.Name, sp.TargetPort.String())
					}
				}
			}
			if o.Spec.Type != corev1.ServiceTypeClusterIP && o.Spec.Type != "" && slices.ContainsFunc(o.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "admin" }) {
				t.Errorf("Service %s of type %s exposes the admin port (plain HTTP, the console)", o.Name, o.Spec.Type)
			}
			if strings.HasSuffix(o.Name, "-broker") && o.Spec.SessionAffinity != corev1.ServiceAffinityClientIP {
				t.Errorf("Service %s: session affinity %q, want ClientIP (MQTT sessions live in one broker)", o.Name, o.Spec.SessionAffinity)
			}
		case *serviceMonitor:
			for _, ep := range o.Spec.Endpoints {
				// The gateway's port is named https when it serves TLS.
				if https := ep.Port == "https"; https != (ep.Scheme == "https") || https != (ep.TLSConfig != nil) {
					t.Errorf("ServiceMonitor %s: port %s scraped with scheme %q and tlsConfig %v", o.Name, ep.Port, ep.Scheme, ep.TLSConfig)
				}
				if c := ep.TLSConfig; c != nil && c.CA != nil && c.InsecureSkipVerify {
					t.Errorf("ServiceMonitor %s: port %s has a CA to verify with, and insecureSkipVerify", o.Name, ep.Port)
				}
				if !slices.ContainsFunc(objs, func(so any) bool {
					svc, ok := so.(*corev1.Service)
					return ok && labels.SelectorFromSet(o.Spec.Selector.MatchLabels).Matches(labels.Set(svc.Labels)) &&
						slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port })
				}) {
					t.Errorf("ServiceMonitor %s: no Service it selects has a port %s", o.Name, ep.Port)
				}
			}
		case *appsv1.StatefulSet:
			if !slices.ContainsFunc(objs, func(so any) bool {
				svc, ok := so.(*corev1.Service)
				return ok && svc.Name == o.Spec.ServiceName && svc.Spec.ClusterIP == corev1.ClusterIPNone
			}) {
				t.Errorf("StatefulSet %s: its serviceName %s is no headless Service of the release", o.Name, o.Spec.ServiceName)
			}
		case *policyv1.PodDisruptionBudget:
			if len(selected(o.Spec.Selector.MatchLabels)) != 1 {
				t.Errorf("PodDisruptionBudget %s selects the pods of %d workloads, want 1", o.Name, len(selected(o.Spec.Selector.MatchLabels)))
			}
		}
	}
}

// portFlags names the flag whose address each container port serves.
var portFlags = map[string]string{"http": "http-addr", "https": "http-addr", "admin": "admin-addr", "mqtt": "mqtt-addr", "mqtts": "mqtt-tls-addr"}

// flagsOf is a container's --flag=value arguments by flag name.
func flagsOf(c corev1.Container) map[string]string {
	flags := map[string]string{}
	for _, a := range c.Args[1:] {
		if name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "="); ok {
			flags[name] = value
		}
	}
	return flags
}

// checkProbes checks that each container port is the port of the address
// flag that serves it (and each address flag has its port), and that a
// process has readiness, liveness and start-up probes on /readyz and /livez
// where serve answers them: the gateway's address when the process runs the
// httpgw role (over HTTPS when the gateway serves TLS: its port is then
// https), else --admin-addr, plain HTTP.
func checkProbes(t *testing.T, pod corev1.PodTemplateSpec) {
	t.Helper()
	c := pod.Spec.Containers[0]
	if c.Args[0] != "serve" {
		return
	}
	flags := flagsOf(c)
	served := map[string]bool{}
	for _, cp := range c.Ports {
		f, ok := portFlags[cp.Name]
		if !ok {
			t.Errorf("container port %s: no address flag serves it", cp.Name)
			continue
		}
		served[f] = true
		if want := fmt.Sprintf(":%d", cp.ContainerPort); flags[f] != want {
			t.Errorf("container port %s (%d): --%s=%q, want %s", cp.Name, cp.ContainerPort, f, flags[f], want)
		}
	}
	for _, f := range portFlags {
		if flags[f] != "" && !served[f] {
			t.Errorf("--%s=%s: no container port of it", f, flags[f])
		}
	}
	_, tls := flags["http-tls-cert"]
	if https := slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == "https" }); tls != https {
		t.Errorf("--http-tls-cert given: %v; a port named https: %v", tls, https)
	}
	port, scheme := "admin", corev1.URISchemeHTTP
	if flags["roles"] == "httpgw" {
		port = "http"
		if tls {
			port, scheme = "https", corev1.URISchemeHTTPS
		}
	}
	for _, p := range []struct {
		kind, path string
		probe      *corev1.Probe
	}{
		{"readiness", "/readyz", c.ReadinessProbe},
		{"liveness", "/livez", c.LivenessProbe},
		{"startup", "/livez", c.StartupProbe},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path {
			t.Errorf("no %s probe on %s: %+v", p.kind, p.path, p.probe)
			continue
		}
		if g := p.probe.HTTPGet; g.Port.String() != port || g.Scheme != scheme {
			t.Errorf("%s probe: %s on port %s, want %s on %s (where serve answers %s)", p.kind, g.Scheme, g.Port.String(), scheme, port, p.path)
		}
	}
}

// checkMounts checks that every file a process reads is mounted read-only,
// and that only the configuration file is mounted by subPath: a subPath mount
// never sees an update of its Secret or ConfigMap, and serve re-reads the
// credentials files and the CRL when they change.
func checkMounts(t *testing.T, pod corev1.PodTemplateSpec) {
	t.Helper()
	for _, m := range pod.Spec.Containers[0].VolumeMounts {
		if !m.ReadOnly {
			t.Errorf("volume %s is mounted writable at %s", m.Name, m.MountPath)
		}
		if m.SubPath != "" && m.Name != "config" {
			t.Errorf("volume %s is mounted by subPath %s: updates would not reach it", m.Name, m.SubPath)
		}
	}
}

// checkConsole checks that with the console on a process listens on
// --admin-addr (its port named admin) and reads the token from the Secret's
// admin-token key as FIREHOSE_ADMIN_TOKEN, and that the token is never on the
// command line or in a ConfigMap; with the console off, no token is given.
func checkConsole(t *testing.T, pod corev1.PodTemplateSpec, on bool, configMaps map[string]map[string]string) {
	t.Helper()
	c := pod.Spec.Containers[0]
	if c.Args[0] != "serve" {
		return
	}
	flags := flagsOf(c)
	if _, ok := flags["admin-token"]; ok {
		t.Error("passes --admin-token on the command line: whoever reads the pod sees it")
	}
	for name, data := range configMaps {
		for k, v := range data {
			if strings.Contains(v, "admin-token") {
				t.Errorf("ConfigMap %s: %s holds admin-token", name, k)
			}
		}
	}
	i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "FIREHOSE_ADMIN_TOKEN" })
	switch {
	case !on && i >= 0:
		t.Error("sets FIREHOSE_ADMIN_TOKEN with the console off")
	case !on:
	case i < 0:
		t.Error("the console is on, but the process gets no FIREHOSE_ADMIN_TOKEN")
	case c.Env[i].Value != "" || c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.SecretKeyRef == nil || c.Env[i].ValueFrom.SecretKeyRef.Key != "admin-token":
		t.Errorf("FIREHOSE_ADMIN_TOKEN is %+v, want the Secret's admin-token key", c.Env[i])
	case flags["admin-addr"] == "" || !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == "admin" }):
		t.Errorf("the console is on, but --admin-addr is %q and the ports are %v", flags["admin-addr"], c.Ports)
	}
}

// pki is what the TLS value sets mount, PEM: a server certificate and key,
// the CA of device certificates, and that CA's revocation list.
type pki struct{ cert, key, ca, crl string }

// newPKI makes a CA, a server certificate it signs and an empty revocation
// list of it.
func newPKI(t *testing.T) pki {
	t.Helper()
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Fleet device CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	certDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "firehose.example"}, DNSNames: []string{"firehose.example"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	crlDER, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: now.Add(-time.Hour), NextUpdate: now.Add(24 * time.Hour),
	}, ca, caKey)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(typ string, der []byte) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
	}
	return pki{
		cert: enc("CERTIFICATE", certDER), key: enc("PRIVATE KEY", keyDER),
		ca: enc("CERTIFICATE", caDER), crl: enc("X509 CRL", crlDER),
	}
}

// checkProcess checks one firehose container against the binary: every flag
// of its command line is one of its command's --help, every FIREHOSE_* variable
// one it reads, and the whole (its files and Secret keys materialised in a
// directory, its flags as their FIREHOSE_* twins) passes `firehose config
// check`, which reads and validates every setting as serve would. It returns
// the roles the process runs.
func checkProcess(t *testing.T, bin string, help map[string]commandHelp, pod corev1.PodTemplateSpec, podName string,
	configMaps, secrets map[string]map[string]string) []string {
	t.Helper()
	c := pod.Spec.Containers[0]
	cmd := c.Args[0]
	h, ok := help[cmd]
	if !ok {
		t.Fatalf("runs firehose %s, want serve or migrate", cmd)
	}
	root := podFiles(t, pod, configMaps, secrets)
	local := func(v string) string {
		if strings.HasPrefix(v, "/etc/firehose/") {
			return filepath.Join(root, v)
		}
		return v
	}
	env, referenced := podEnv(t, c, secrets, podName)
	for name := range env {
		if strings.HasPrefix(name, "FIREHOSE_") {
			if !h.envs[name] {
				t.Errorf("sets %s, which firehose %s does not read", name, cmd)
			}
		} else if !slices.Contains(referenced, name) {
			t.Errorf("sets %s, which firehose does not read and no variable refers to", name)
		}
	}
	// The command line: each flag as its FIREHOSE_* twin, which config check
	// reads as serve would.
	configFile := ""
	var stopping time.Duration // --shutdown-delay + --shutdown-timeout
	for _, a := range c.Args[1:] {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !ok {
			t.Errorf("argument %q: want --flag=value", a)
			continue
		}
		if !h.flags[name] {
			t.Errorf("passes --%s, which firehose %s does not have", name, cmd)
			continue
		}
		if name == "config" {
			configFile = local(value)
			continue
		}
		if name == "shutdown-delay" || name == "shutdown-timeout" {
			d, err := time.ParseDuration(value)
			if err != nil {
				t.Errorf("--%s=%s: %v", name, value, err)
			}
			stopping += d
		}
		env["FIREHOSE_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))] = local(value)
	}
	if configFile == "" {
		t.Fatal("passes no --config")
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; cmd == "serve" && (g == nil || time.Duration(*g)*time.Second <= stopping) {
		t.Errorf("terminationGracePeriodSeconds %v leaves no room for --shutdown-delay + --shutdown-timeout (%s)", g, stopping)
	}
	check := exec.Command(bin, "config", "check", configFile, "--json")
	check.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + root}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		check.Env = append(check.Env, k+"="+env[k])
	}
	out, err := check.CombinedOutput()
	if err != nil {
		t.Errorf("firehose config check refuses the process's settings: %v\n%s\nenvironment: %q", err, out, check.Env)
		return nil
	}
	var rep struct {
		Roles []string `json:"roles"`
	}
	if err := yaml.Unmarshal(out, &rep); err != nil {
		t.Fatalf("config check --json: %v\n%s", err, out)
	}
	if cmd != "serve" {
		return nil
	}
	// One role a workload, the one its pods are labelled with.
	if want := pod.Labels["app.kubernetes.io/component"]; !slices.Equal(rep.Roles, []string{want}) {
		t.Errorf("runs the roles %v, want [%s]", rep.Roles, want)
	}
	return rep.Roles
}

// podFiles writes the files a pod's container mounts (its ConfigMaps' and
// Secrets' keys) under a directory of the test, at their mount paths, and
// returns the directory.
func podFiles(t *testing.T, pod corev1.PodTemplateSpec, configMaps, secrets map[string]map[string]string) string {
	t.Helper()
	c := pod.Spec.Containers[0]
	root := t.TempDir()
	// The files the pod mounts, under root.
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok {
			t.Fatalf("mounts volume %s, which the pod does not have", m.Name)
		}
		var data map[string]string
		var items []corev1.KeyToPath
		switch {
		case v.ConfigMap != nil:
			data, items = configMaps[v.ConfigMap.Name], v.ConfigMap.Items
		case v.Secret != nil:
			data, items = secrets[v.Secret.SecretName], v.Secret.Items
		}
		if data == nil {
			t.Fatalf("volume %s: no ConfigMap or Secret of the release holds it", m.Name)
		}
		files := map[string]string{}
		for _, it := range items {
			files[it.Path] = data[it.Key]
		}
		if len(items) == 0 {
			files = data
		}
		for name, content := range files {
			path := filepath.Join(root, m.MountPath, name)
			if m.SubPath != "" {
				if name != m.SubPath {
					continue
				}
				path = filepath.Join(root, m.MountPath)
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

// podEnv is a container's environment as Kubernetes builds it: Secret keys,
// the pod's name, $(NAME) of variables before; and the names $(NAME) refers to.
func podEnv(t *testing.T, c corev1.Container, secrets map[string]map[string]string, podName string) (map[string]string, []string) {
	t.Helper()
	env := map[string]string{}
	var referenced []string
	for _, e := range c.Env {
		var v string
		switch {
		case e.ValueFrom == nil:
			v = os.Expand(strings.ReplaceAll(strings.ReplaceAll(e.Value, "$(", "${"), ")", "}"), func(name string) string {
				referenced = append(referenced, name)
				if val, ok := env[name]; ok {
					return val
				}
				t.Errorf("%s refers to $(%s), not set before it", e.Name, name)
				return ""
			})
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			val, ok := secrets[ref.Name][ref.Key]
			if !ok {
				t.Errorf("%s: Secret %s has no key %s", e.Name, ref.Name, ref.Key)
			}
			v = val
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			v = podName
		default:
			t.Errorf("%s: unexpected source %+v", e.Name, e.ValueFrom)
		}
		env[e.Name] = v
	}
	return env, referenced
}

// commandHelp is what a command's --help lists: its flags and variables.
type commandHelp struct {
	flags map[string]bool
	envs  map[string]bool
}

func helpOf(t *testing.T, bin, command string) commandHelp {
	t.Helper()
	out, _ := exec.Command(bin, command, "--help").CombinedOutput()
	h := commandHelp{flags: map[string]bool{}, envs: map[string]bool{}}
	for _, m := range regexp.MustCompile(`(?m)^  --([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
		h.flags[m[1]] = true
	}
	for _, m := range regexp.MustCompile(`\[(FIREHOSE_[A-Z0-9_]+)\]`).FindAllStringSubmatch(string(out), -1) {
		h.envs[m[1]] = true
	}
	if len(h.flags) < 10 || len(h.envs) < 10 {
		t.Fatalf("firehose %s --help lists %d flags and %d variables:\n%s", command, len(h.flags), len(h.envs), out)
	}
	return h
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// firehoseBinary builds firehose from the repository's main module.
func firehoseBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "firehose-helm-test")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(buildDir, "firehose"), "./cmd/firehose")
		cmd.Dir = filepath.Join("..", "..")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/firehose: %v\n%s", err, out.String())
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "firehose")
}

func runBin(t *testing.T, bin, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("firehose %s: %v", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out))
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// TestChartLint runs `helm lint`'s rules on the chart with each value set; a
// warning fails too (an informational message, such as the missing icon, does
// not).
func TestChartLint(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			vals, err := common.ReadValues([]byte(vs.values))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range lint.RunAll(chartDir, vals, "iot").Messages {
				if m.Severity >= support.WarningSev {
					t.Error(m)
				} else {
					t.Log(m)
				}
			}
		})
	}
}
