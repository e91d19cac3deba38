package control

import (
	"strings"
	"testing"
	"time"
)

func TestSplitSyslog(t *testing.T) {
	for _, c := range []struct {
		in                 string
		prefix, ident, msg string
		pid                int
		ok                 bool
	}{
		{"Mar 29 21:14:07 mx sm-mta[4211]: n2T: from=<a@b>", "Mar 29 21:14:07 mx ", "sm-mta", "n2T: from=<a@b>", 4211, true},
		{"<22>2026-03-29T21:14:07.123+02:00 mx sendmail[7]: x", "2026-03-29T21:14:07.123+02:00 mx ", "sendmail", "x", 7, true},
		{"sendmail[7]: x", "", "sendmail", "x", 7, true},
		{"Mar 29 mx mxguard[1]:", "Mar 29 mx ", "mxguard", "", 1, true},
		{"Mar 29 mx x: <a [1.2.3.4]> sendmail[7]: y", "", "", "", 0, false},
		{"Mar 29 mx sendmail[99999999999999999999]: y", "", "", "", 0, false},
		{"time=x level=INFO msg=y", "", "", "", 0, false},
	} {
		l, ok := SplitSyslog(c.in)
		if ok != c.ok || l.Prefix != c.prefix || l.Ident != c.ident || l.Msg != c.msg || l.PID != c.pid {
			t.Errorf("SplitSyslog(%q) = %+v, %v", c.in, l, ok)
		}
	}
	if !IsSendmail("sm-mta") || IsSendmail("mxguard") {
		t.Error("IsSendmail")
	}
}

// TestParseSendmailHost: the host name comes with the address from the
// client field only, never from text the client sent.
func TestParseSendmailHost(t *testing.T) {
	for _, c := range []struct{ msg, addr, host string }{
		{"n2TKE7Zq004211: from=<a@b>, size=1, class=0, nrcpts=1, msgid=<x@y>, proto=ESMTP, daemon=MTA, relay=mail.Example.org. [192.0.2.1]", "192.0.2.1", "mail.example.org"},
		{"n2TKE7Zq004211: from=<a@b>, size=1, relay=[192.0.2.1]", "192.0.2.1", ""},
		{"n2TKE7Zq004211: from=<a@b>, size=1, relay=p1.dsl.example [192.0.2.1] (may be forged)", "192.0.2.1", ""},
		{"n2TKE7Zq004211: from=<a@b>, size=1, relay=ident@p1.dsl.example [192.0.2.1]", "192.0.2.1", "p1.dsl.example"},
		{"ruleset=check_relay, arg1=p1.dsl.example, arg2=192.0.2.1, relay=p1.dsl.example [192.0.2.1], reject=421 4.3.2 Connection rate limit exceeded.", "192.0.2.1", "p1.dsl.example"},
		{"n2TKE7Zq004211: rejecting commands from p1.dsl.example [192.0.2.1] due to pre-greeting traffic after 0 seconds", "192.0.2.1", "p1.dsl.example"},
		{"n2TKE7Zq004211: rejecting commands from [192.0.2.1] [192.0.2.1] due to pre-greeting traffic after 0 seconds", "192.0.2.1", ""},
		{"tcpwrappers (p1.dsl.example, 192.0.2.1) rejection", "192.0.2.1", "p1.dsl.example"},
		{"tcpwrappers (unknown, 192.0.2.1) rejection", "192.0.2.1", ""},
		{"n2TKE7Zq004211: p1.dsl.example [192.0.2.1] did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA", "192.0.2.1", "p1.dsl.example"},
		{"n2TKE7Zq004211: lost input channel from [192.0.2.1] to MTA after rcpt", "192.0.2.1", ""},
	} {
		got, ok, err := ParseSendmail(c.msg)
		if !ok || err != nil || got.Prefix.Addr().String() != c.addr || got.Host != c.host {
			t.Errorf("ParseSendmail(%q) = %+v, %v, %v; want %s named %q", c.msg, got, ok, err, c.addr, c.host)
		}
	}
	if _, ok, _ := ParseSendmail("n2TKE7Zq004211: <x@y>... User unknown"); ok {
		t.Error("a User unknown line read as naming a client")
	}
}

func TestMxguardFields(t *testing.T) {
	at := time.Date(2026, 3, 25, 10, 0, 0, 0, time.UTC)
	text := mxLine("disconnect from p1.dsl.example [192.0.2.1]", "session", "a1", "ip", "192.0.2.1", "messages", 2, "duration", 1500*time.Millisecond)
	json := mxJSON("disconnect from p1.dsl.example [192.0.2.1]", "session", "a1", "ip", "192.0.2.1", "messages", 2, "duration", 1500*time.Millisecond, "at", at)
	for name, line := range map[string]string{"text": text, "json": json, "journald": journald + text} {
		fields, err := MxguardFields(line)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got := map[string]string{}
		for _, f := range fields {
			got[f.Key] = f.Value
		}
		want := map[string]string{"msg": "disconnect from p1.dsl.example [192.0.2.1]", "session": "a1", "ip": "192.0.2.1", "messages": "2"}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s = %q, want %q", name, k, got[k], v)
			}
		}
		// Durations as each handler writes them: text "1.5s", JSON
		// nanoseconds.
		if d := got["duration"]; d != "1.5s" && d != "1500000000" {
			t.Errorf("%s: duration %q", name, d)
		}
		if got["time"] == "" || got["level"] != "INFO" {
			t.Errorf("%s: time %q level %q", name, got["time"], got["level"])
		}
	}
	for _, bad := range []string{"hello", `{"ip":"192.0.2.1"}`, "level=INFO ip=192.0.2.1", `time=x msg="unterminated`, "Mar 29 mx sm-mta[1]: from=<a@b>"} {
		if f, err := MxguardFields(bad); err == nil || !strings.Contains(err.Error(), "log line refused") {
			t.Errorf("MxguardFields(%q) = %v, %v; want a refusal", bad, f, err)
		}
	}
}
