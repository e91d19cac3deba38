package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRelayProcsOnOneCore: pinned to one core, mxguard in relay mode runs
// with two Ps (GOMAXPROCS 2), so that sessions are read while the spool's
// group committer waits in fdatasync (cmd/mxguard's minProcs says why); in
// local mode it keeps the runtime's choice, one. An operator's GOMAXPROCS
// is left as it is.
func TestRelayProcsOnOneCore(t *testing.T) {
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		t.Skip("taskset (util-linux) is not installed")
	}
	// One core this process may run on (not always core 0 in a container).
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	core := -1
	for c := 0; c < 1024 && core < 0; c++ {
		if set.IsSet(c) {
			core = c
		}
	}
	if core < 0 {
		t.Fatal("no core in this process's affinity")
	}
	back := startMX(t, "hostname = \"back.test\"\nlocal_domains = [\"localhost\"]\n")
	relay := fmt.Sprintf("[delivery]\nrelay = \"smtp://%s\"\n", back.addr)
	for _, tt := range []struct {
		name, toml, env string
		want            string
	}{
		{"relay", relay, "", "2"},
		{"local", "", "", "1"},
		{"relay, GOMAXPROCS set", relay, "GOMAXPROCS=1", "1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			m := startMX(t, tt.toml+fmt.Sprintf("[admin]\nlisten = %q\n", admin))
			m.stop()
			cmd := exec.Command(taskset, "-c", strconv.Itoa(core), binary, "serve", "--config", m.config)
			cmd.Dir = m.dir
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "GOMAXPROCS=") {
					cmd.Env = append(cmd.Env, kv)
				}
			}
			if tt.env != "" {
				cmd.Env = append(cmd.Env, tt.env)
			}
			m.startCmd(cmd)
			got := gomaxprocsGauge.FindStringSubmatch(httpGet(t, "http://"+admin+"/metrics"))
			if got == nil {
				t.Fatalf("no go_sched_gomaxprocs_threads at %s", admin)
			}
			if got[1] != tt.want {
				t.Errorf("GOMAXPROCS on one core = %s, want %s", got[1], tt.want)
			}
		})
	}
}

var gomaxprocsGauge = regexp.MustCompile(`(?m)^go_sched_gomaxprocs_threads ([0-9]+)$`)
