package server

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPrefixFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trusted.txt")
	if got, err := readPrefixFile(path); err != nil || got != nil {
		t.Fatalf("missing file: %v, %v; want empty list", got, err)
	}
	for _, p := range []string{"192.0.2.7/32", "198.51.100.0/24", "192.0.2.7/32"} {
		if _, err := appendPrefix(path, netip.MustParsePrefix(p), "test"); err != nil {
			t.Fatal(err)
		}
	}
	got, err := readPrefixFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].String() != "192.0.2.7/32" || got[1].String() != "198.51.100.0/24" {
		t.Fatalf("read back %v", got)
	}
	os.WriteFile(path, []byte("# comment\n\n10.0.0.0/8 # note\nnot an address\n"), 0o644)
	if _, err := readPrefixFile(path); err == nil || !strings.Contains(err.Error(), ":4:") {
		t.Fatalf("bad line: err = %v, want one naming line 4", err)
	}
}
