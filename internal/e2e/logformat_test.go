package e2e

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestLogFormatJSON: with log_format = "json" every line is one JSON
// object; a refusal carries the client in "ip" and the vocabulary's name in
// "reason", and such a line is what `mxguard trust` reads.
func TestLogFormatJSON(t *testing.T) {
	m := startMX(t, "log_format = \"json\"\ntrusted_networks = []\nlocal_domains = [\"example.org\"]\n[limits]\nclient_rate = 1\n")
	c := rawClient(t, "127.0.0.41", m.addr)
	expect(t, c.reply(), "220")
	c.cmd("QUIT")
	c = rawClient(t, "127.0.0.41", m.addr)
	expect(t, c.reply(), "421 4.3.2 Connection rate limit exceeded.")
	line := m.waitLog(`"reason":"ratecontrol"`, 10*time.Second)
	for _, l := range strings.Split(strings.TrimSpace(m.logs()), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Errorf("not a JSON line: %q: %v", l, err)
		}
	}
	var v struct{ IP, Reason, Msg string }
	for _, l := range strings.Split(line, "\n") {
		if strings.Contains(l, `"reason":"ratecontrol"`) {
			json.Unmarshal([]byte(l), &v)
			line = l
		}
	}
	if v.IP != "127.0.0.41" || v.Reason != "ratecontrol" || !strings.HasPrefix(v.Msg, "rejecting connection from unknown [127.0.0.41]") {
		t.Errorf("refusal line %q: ip %q reason %q msg %q", line, v.IP, v.Reason, v.Msg)
	}
	out, err := exec.Command(binary, "trust", "--config", m.config, line).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "client 127.0.0.41 (") {
		t.Fatalf("trust from a JSON line: %v\n%s", err, out)
	}
	c = rawClient(t, "127.0.0.41", m.addr)
	expect(t, c.reply(), "220")
}
