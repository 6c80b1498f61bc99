package helm

import (
	"bytes"
	"fmt"
	"maps"
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

// valueSets are the deployments the chart is rendered for: its defaults with a
// single Redis, Sentinel with every credential the chart makes a Secret of, and a
// Redis Cluster with a Secret of the user's and subscribers. %s is replaced by a
// line of `firehose mqttpasswd` and %k by one of `firehose apikey`.
var valueSets = []struct {
	name   string
	values string
	// secret is the data of credentials.existingSecret, which the chart
	// does not render.
	secret map[string]string
}{
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
}

func TestChartRendersValidObjects(t *testing.T) {
	bin := firehoseBinary(t)
	help := map[string]commandHelp{"serve": helpOf(t, bin, "serve"), "migrate": helpOf(t, bin, "migrate")}
	mqttLine := runBin(t, bin, "dev-1\n", "mqttpasswd", "dev-1")
	keyOut := strings.Split(runBin(t, bin, "", "apikey", "gw-1"), "\n")
	apiKeyLine := strings.TrimSpace(keyOut[len(keyOut)-1])

	roles := map[string]bool{}
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			values := strings.NewReplacer("%m", strings.TrimSpace(mqttLine), "%k", apiKeyLine).Replace(vs.values)
			objs := render(t, values)
			secrets := map[string]map[string]string{"firehose-credentials": vs.secret}
			configMaps := map[string]map[string]string{}
			for _, o := range objs {
				switch o := o.(type) {
				case *corev1.Secret:
					secrets[o.Name] = o.StringData
				case *corev1.ConfigMap:
					configMaps[o.Name] = o.Data
				}
			}
			checkServices(t, objs)
			for _, o := range objs {
				name, pod, ok := podOf(o)
				if !ok {
					continue
				}
				t.Run(name, func(t *testing.T) {
					checkProbes(t, pod)
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
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := renderText(tc.values)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("render error %v, want one naming %s", err, tc.want)
			}
		})
	}
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
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
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
			if strings.HasSuffix(o.Name, "-broker") && o.Spec.SessionAffinity != corev1.ServiceAffinityClientIP {
				t.Errorf("Service %s: session affinity %q, want ClientIP (MQTT sessions live in one broker)", o.Name, o.Spec.SessionAffinity)
			}
		case *serviceMonitor:
			for _, ep := range o.Spec.Endpoints {
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

// checkProbes checks that a process has readiness and liveness probes on
// /readyz and /livez at one of its ports.
func checkProbes(t *testing.T, pod corev1.PodTemplateSpec) {
	t.Helper()
	c := pod.Spec.Containers[0]
	if c.Args[0] != "serve" {
		return
	}
	for path, p := range map[string]*corev1.Probe{"/readyz": c.ReadinessProbe, "/livez": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path {
			t.Errorf("no probe on %s: %+v", path, p)
			continue
		}
		if !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == p.HTTPGet.Port.String() }) {
			t.Errorf("probe of %s on port %s, which the container does not expose", path, p.HTTPGet.Port.String())
		}
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
	local := func(v string) string {
		if strings.HasPrefix(v, "/etc/firehose/") {
			return filepath.Join(root, v)
		}
		return v
	}
	// The environment, as Kubernetes builds it: Secret keys, the pod's name,
	// $(NAME) of variables before.
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

// TestChartLint runs `helm lint`'s rules on the chart with a value set; a
// warning fails too (an informational message, such as the missing icon, does
// not).
func TestChartLint(t *testing.T) {
	vals, err := common.ReadValues([]byte(valueSets[0].values))
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
}
