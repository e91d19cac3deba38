package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/resolve"
	"github.com/mxguard/mxguard/internal/smtptest"
)

// noDNS answers every reverse lookup with "no name": the transcripts need
// no names, and no query leaves the process.
type noDNS struct{}

func (noDNS) Verify(context.Context, netip.Addr) resolve.Result {
	return resolve.Result{Status: resolve.NoName}
}

// TestTranscripts plays every file in testdata/transcripts against the
// fully configured server (the envelope policy, recipients, aliases, the
// access map, Maildir storage), built in process from a configuration
// file, on a loopback listener. Steps are internal/smtptest's; settings:
//
//	@config line      a line of the configuration file (TOML), after the
//	                  defaults: hostname "mx.test", local_domains
//	                  ["example.org"], trusted_networks ["127.0.9.0/24"]
//	@recipients line  a line of the recipients file (recipients.file)
//	@aliases line     a line of the aliases file (recipients.aliases)
//	@access line      a line of the access map (access_map)
//	@client addr      the client's source address (default 127.0.0.2,
//	                  untrusted)
//
// MESSAGES counts the files in the Maildirs' new/.
func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/transcripts/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			t.Parallel()
			playTranscript(t, f)
		})
	}
}

func playTranscript(t *testing.T, file string) {
	settings, steps := smtptest.Load(t, file)
	dir := t.TempDir()
	var conf, rcpts, aliases, access []string
	client := "127.0.0.2"
	for _, kv := range settings {
		switch kv[0] {
		case "config":
			conf = append(conf, kv[1])
		case "recipients":
			rcpts = append(rcpts, kv[1])
		case "aliases":
			aliases = append(aliases, kv[1])
		case "access":
			access = append(access, kv[1])
		case "client":
			client = kv[1]
		default:
			t.Fatalf("unknown setting @%s", kv[0])
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "hostname = \"mx.test\"\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\nlocal_domains = [\"example.org\"]\ntrusted_networks = [\"127.0.9.0/24\"]\n")
	for name, lines := range map[string][]string{"recipients.file": rcpts, "recipients.aliases": aliases, "access_map": access} {
		if len(lines) == 0 {
			continue
		}
		file := strings.ReplaceAll(name, ".", "-")
		if err := os.WriteFile(filepath.Join(dir, file), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s = %q\n", name, file)
	}
	b.WriteString(strings.Join(conf, "\n") + "\n")
	cfg := loadConfig(t, dir, b.String())
	logger := slog.New(slog.NewTextHandler(testLog{t}, nil))
	srv, err := New(cfg, logger, WithVerifier(noDNS{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { srv.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(client)}}
	start := time.Now()
	nc, err := d.Dial("tcp", srv.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	smtptest.Play(t, filepath.Base(file), start, nc, steps, func() []string { return maildirMessages(t, filepath.Join(cfg.DataDir, "mail")) })
}

// maildirMessages reads every message in the new/ of every Maildir under
// root, in file-name order.
func maildirMessages(t *testing.T, root string) []string {
	files, _ := filepath.Glob(filepath.Join(root, "*", "*", "new", "*"))
	slices.Sort(files)
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
