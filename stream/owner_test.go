package stream

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestOneOwnerOfTheRedisLayout keeps the layout's knowledge here (issue 17):
// the packages of the reading and the edges' parsing do not import go-redis,
// no Lua script is written outside this package, and no Lua script here names
// a metadata field by a literal instead of its constant.
func TestOneOwnerOfTheRedisLayout(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	for _, pkg := range []string{"firehose/ingest", "firehose/mapping", "firehose/sparkplug", "firehose/mqttmsg", "firehose/httpgw"} {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		if strings.Contains(string(out), "github.com/redis/go-redis") {
			t.Errorf("%s depends on go-redis: only stream (and the bridge) may talk to Redis", pkg)
		}
	}

	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	lua := regexp.MustCompile(`redis\.NewScript|redis\.call\(`)
	literal := regexp.MustCompile(`'(generation|deployment|backlog|n|sid|shards|layout)'`)
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); name == ".git" || name == "testdata" || name == "bin" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		inStream := filepath.Dir(rel) == "stream"
		if !inStream && lua.Match(src) {
			t.Errorf("%s holds a Lua script: every script lives in package stream", rel)
		}
		if inStream {
			if m := literal.Find(src); m != nil {
				t.Errorf("%s names the metadata field %s by a literal in Lua: inject its constant", rel, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
