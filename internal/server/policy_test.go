package server

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/deliver"
	"github.com/mxguard/mxguard/internal/smtpd"
	"github.com/mxguard/mxguard/internal/testcert"
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

// TestCheck: every problem with the files a configuration names is
// reported at once, each with the config file, line and key (or the
// named file's own line), before anything is opened or made.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mkdir := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cert, key := testcert.WriteFiles(t, dir, "mx.test")
	tests := []struct {
		name string
		toml string
		want []string // each a substring of the error; nil: no error
	}{
		{"good", "access_map = \"" + write("access", "ClientRate:192.0.2.1 65536\n") + "\"\n" +
			"tls_cert = \"" + cert + "\"\ntls_key = \"" + key + "\"\n", nil},
		{"access map is a directory", "\naccess_map = \"" + mkdir("adir") + "\"\n",
			[]string{"mx.toml:2: access_map: " + dir + "/adir is a directory, not a file"}},
		{"hosts_deny missing", "hosts_deny = \"" + dir + "/nope\"\n",
			[]string{"mx.toml:1: hosts_deny: " + dir + "/nope does not exist"}},
		{"trust file is a directory", "trust_file = \"" + mkdir("tdir") + "\"\n",
			[]string{"mx.toml:1: trust_file: " + dir + "/tdir is a directory, not a file"}},
		{"data_dir is a file", "data_dir = \"" + write("afile", "x") + "\"\n",
			[]string{"mx.toml:1: data_dir: " + dir + "/afile is not a directory (a regular file)"}},
		{"control is a directory", "control = \"" + mkdir("cdir") + "\"\n",
			[]string{"mx.toml:1: control: " + dir + "/cdir exists and is not a socket (a directory)"}},
		{"certificate missing", "tls_cert = \"" + dir + "/c.pem\"\ntls_key = \"" + key + "\"\n",
			[]string{"mx.toml:1: tls_cert: " + dir + "/c.pem does not exist"}},
		{"certificate not PEM", "tls_cert = \"" + write("bad.pem", "junk") + "\"\ntls_key = \"" + key + "\"\n",
			[]string{"mx.toml:1: tls_cert: with tls_key " + key}},
		{"rate beyond the limiter", "access_map = \"" + write("access2", "# x\nClientRate:192.0.2.1 1000000\nClientRate: 70000\n") + "\"\n",
			[]string{"access2:2: ClientRate:192.0.2.1: 1000000 is more than the largest supported rate, 65536",
				"access2:3: ClientRate:: 70000 is more than"}},
		{"every problem at once", "access_map = \"" + mkdir("adir") + "\"\nhosts_allow = \"" + mkdir("hdir") + "\"\ncontrol = \"" + write("cfile", "") + "\"\n",
			[]string{"mx.toml:1: access_map:", "mx.toml:2: hosts_allow:", "mx.toml:3: control:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := write("mx.toml", tt.toml)
			cfg, err := config.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Check(cfg)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Check passed, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), strings.Replace(w, "mx.toml", path, 1)) {
					t.Errorf("Check error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestTimeoutsWiring: every [timeouts] value set in the file reaches the
// relay client and the SMTP server (the relay's starttls was once dropped
// on the way).
func TestTimeoutsWiring(t *testing.T) {
	cfg, err := config.Parse([]byte(`[timeouts]
command = "11s"
helo = "12s"
mail = "13s"
rcpt = "14s"
datainit = "15s"
datablock = "16s"
datafinal = "17s"
rset = "18s"
quit = "19s"
misc = "20s"
starttls = "21s"
connect = "22s"
initial = "23s"
lhlo = "24s"
`), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	s := time.Second
	if got, want := relayTimeouts(&cfg.Timeouts), (deliver.Timeouts{Connect: 22 * s, Initial: 23 * s, Helo: 12 * s,
		Lhlo: 24 * s, StartTLS: 21 * s, Mail: 13 * s, Rcpt: 14 * s, DataInit: 15 * s, DataBlock: 16 * s,
		DataFinal: 17 * s, Quit: 19 * s}); got != want {
		t.Errorf("relay timeouts = %+v, want %+v", got, want)
	}
	if got, want := (&Server{}).smtpConfig(cfg, nil).Timeouts, (smtpd.Timeouts{Command: 11 * s, Helo: 12 * s, Mail: 13 * s,
		Rcpt: 14 * s, DataInit: 15 * s, DataBlock: 16 * s, DataFinal: 17 * s, Rset: 18 * s, Quit: 19 * s,
		Misc: 20 * s, StartTLS: 21 * s}); got != want {
		t.Errorf("server timeouts = %+v, want %+v", got, want)
	}
}
