package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// RunWithFirehose is the TestMain of a package whose tests run firehose as a
// process:
//
//	var binary string
//
//	func TestMain(m *testing.M) { testenv.RunWithFirehose(m, "../cmd/firehose", &binary) }
//
// It builds the command in dir (relative to the package under test) once
// into a temporary directory, sets *binary to the executable, runs the tests,
// removes the directory and exits with the tests' code. A failed build exits
// 1 before any test runs.
func RunWithFirehose(m *testing.M, dir string, binary *string) {
	tmp, err := os.MkdirTemp("", "firehose-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*binary = filepath.Join(tmp, "firehose")
	build := exec.Command("go", "build", "-o", *binary, dir)
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build firehose:", err)
		os.RemoveAll(tmp)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(tmp)
	os.Exit(code)
}
