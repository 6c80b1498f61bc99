package helm

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TestIntegrationProbesAndConsole runs the broker and the gateway of a value
// set with TLS, device certificates and the console as their pods would (the
// rendered command line, mounted files and environment) on free local ports
// against the test Redis, then asks each probe as the kubelet does (HTTPS
// without verifying the server's certificate and without a client
// certificate) and the console with the token, over plain HTTP on the admin
// port.
func TestIntegrationProbesAndConsole(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: skipped under -short")
	}
	bin := firehoseBinary(t)
	fx := newFixtures(t, bin)
	i := slices.IndexFunc(valueSets, func(vs valueSet) bool { return vs.name == "tls file auth console" })
	objs, secrets, configMaps := fx.render(t, valueSets[i])
	ran := 0
	for _, o := range objs {
		name, pod, ok := podOf(o)
		if !ok || !slices.Contains([]string{"broker", "httpgw"}, pod.Labels["app.kubernetes.io/component"]) {
			continue
		}
		ran++
		t.Run(name, func(t *testing.T) {
			runPod(t, bin, pod, name+"-0", configMaps, secrets)
		})
	}
	if ran != 2 {
		t.Fatalf("ran %d processes, want the broker and the gateway", ran)
	}
}

// runPod starts the pod's firehose process and checks its probes and console.
func runPod(t *testing.T, bin string, pod corev1.PodTemplateSpec, podName string, configMaps, secrets map[string]map[string]string) {
	c := pod.Spec.Containers[0]
	root := podFiles(t, pod, configMaps, secrets)
	env, _ := podEnv(t, c, secrets, podName)

	// Each container port on a free port of the loopback interface.
	ports := map[string]string{} // container port name -> host:port
	addrs := map[string]string{} // address flag -> host:port
	for i, addr := range freeAddrs(t, len(c.Ports)) {
		ports[c.Ports[i].Name], addrs[portFlags[c.Ports[i].Name]] = addr, addr
	}
	args := []string{c.Args[0]}
	for _, a := range c.Args[1:] {
		name, value, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		switch {
		case addrs[name] != "":
			value = addrs[name]
		case strings.HasPrefix(value, "/etc/firehose/"):
			value = filepath.Join(root, value)
		}
		args = append(args, "--"+name+"="+value)
	}
	redisURL := os.Getenv("FIREHOSE_TEST_REDIS")
	if redisURL == "" {
		redisURL = "redis://127.0.0.1:6379/0"
	}
	prefix := "helmtest-" + randomID(t)
	env["FIREHOSE_REDIS_URL"] = redisURL
	env["FIREHOSE_REDIS_PREFIX"] = prefix
	// The edges do not need PostgreSQL (the credentials are a file): a
	// database that does not exist keeps the test off everyone's.
	env["FIREHOSE_POSTGRES_URL"] = "postgres://127.0.0.1:5432/firehose_helm_absent_" + randomID(t) + "?sslmode=disable"

	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + root}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start firehose: %v", err)
	}
	exited := make(chan struct{}) // closed when the process has ended
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		// The keys the process made under its prefix.
		keys, err := exec.Command("redis-cli", "-u", redisURL, "--scan", "--pattern", prefix+"*").Output()
		if err != nil {
			t.Logf("redis-cli --scan %s*: %v", prefix, err)
			return
		}
		for _, k := range strings.Fields(string(keys)) {
			if err := exec.Command("redis-cli", "-u", redisURL, "del", k).Run(); err != nil {
				t.Logf("redis-cli del %s: %v", k, err)
			}
		}
		if t.Failed() {
			t.Logf("firehose %s:\n%s", strings.Join(args, " "), out.String())
		}
	})

	// As the kubelet: HTTPS probes verify no certificate and send none.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	get := func(url string, header http.Header) error {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.Header = header
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
	for kind, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
		g := p.HTTPGet
		url := fmt.Sprintf("%s://%s%s", strings.ToLower(string(g.Scheme)), ports[g.Port.String()], g.Path)
		waitFor(t, exited, kind+" probe "+url, func() error { return get(url, nil) })
	}
	token := env["FIREHOSE_ADMIN_TOKEN"]
	if token == "" {
		t.Fatal("the console is on, but the process gets no token")
	}
	url := "http://" + ports["admin"] + "/console/"
	waitFor(t, exited, "the console at "+url, func() error {
		return get(url, http.Header{"Authorization": {"Bearer " + token}})
	})
}

// waitFor polls f until it succeeds, failing the test with its last error
// when the process has exited or after a minute.
func waitFor(t *testing.T, exited <-chan struct{}, what string, f func() error) {
	t.Helper()
	deadline := time.After(time.Minute)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return
		}
		select {
		case <-exited:
			t.Fatalf("%s: %v; the process has exited", what, err)
		case <-deadline:
			t.Fatalf("%s: %v", what, err)
		case <-tick.C:
		}
	}
}

// freeAddrs are n distinct loopback addresses with ports no one listens on
// now (each is held until all are chosen, so none is chosen twice).
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs
}

func randomID(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// syncBuffer is a process's output, written by exec's copying goroutine and
// read by the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
