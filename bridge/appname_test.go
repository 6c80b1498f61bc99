package bridge

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestBridgeAppNameNamesTheProcess(t *testing.T) {
	name := BridgeAppName()
	if len(name) > 63 {
		t.Errorf("application_name %q is %d bytes: PostgreSQL keeps 63", name, len(name))
	}
	b := BridgeOf(name)
	if !strings.HasSuffix(b, ":"+strconv.Itoa(os.Getpid())) {
		t.Errorf("BridgeOf(%q) = %q, want host:pid", name, b)
	}
	if got := BridgeOf("psql"); got != "" {
		t.Errorf("BridgeOf(psql) = %q, want none", got)
	}
}
