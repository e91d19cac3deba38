package stress

import (
	"net"
	"testing"
	"time"
)

// TestObserve: a table of samples, one a second, and the transitions they
// bring about.
func TestObserve(t *testing.T) {
	cfg := Config{SessionsPercent: 80, MaxSessions: 10, AcceptBacklog: 50, Hold: 3 * time.Second}
	type step struct {
		s    Sample
		want string // "on: why", "off: why" or "" for no transition
	}
	for _, tc := range []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{"calm", cfg, []step{{Sample{Sessions: 7}, ""}, {Sample{Sessions: 0, Queued: 49}, ""}}},
		{"sessions at the share", cfg, []step{
			{Sample{Sessions: 8}, "on: 8 of 10 sessions open (at or above 80%)"},
			{Sample{Sessions: 10}, ""},
			{Sample{Sessions: 2}, ""},
			{Sample{Sessions: 2}, ""},
			{Sample{Sessions: 2}, "off: load below the thresholds for 3s"},
			{Sample{Sessions: 2}, ""},
		}},
		{"a flood that pauses holds stress", cfg, []step{
			{Sample{Sessions: 9}, "on: 9 of 10 sessions open (at or above 80%)"},
			{Sample{}, ""},
			{Sample{}, ""},
			{Sample{Sessions: 8}, ""}, // high again: the hold starts over
			{Sample{}, ""},
			{Sample{}, ""},
			{Sample{}, "off: load below the thresholds for 3s"},
		}},
		{"accept queue", cfg, []step{
			{Sample{Queued: 50, Listener: "127.0.0.1:25"}, "on: 50 connections waiting to be accepted on 127.0.0.1:25 (at or above 50)"},
		}},
		{"accept failed", cfg, []step{{Sample{AcceptFailed: true}, "on: accepting connections failed"}}},
		{"no max_daemon_children: sessions not watched", Config{SessionsPercent: 80, Hold: time.Second}, []step{{Sample{Sessions: 100000}, ""}}},
		{"percent 0: sessions not watched", Config{MaxSessions: 10, Hold: time.Second}, []step{{Sample{Sessions: 10}, ""}}},
		{"backlog 0: queue not watched", Config{Hold: time.Second}, []step{{Sample{Queued: 4096}, ""}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New(tc.cfg)
			now := time.Unix(1000, 0)
			for i, st := range tc.steps {
				tr, ok := m.Observe(now, st.s)
				got := ""
				if ok {
					got = map[bool]string{true: "on: ", false: "off: "}[tr.On] + tr.Why
				}
				if got != st.want {
					t.Fatalf("sample %d (%+v): %q, want %q", i, st.s, got, st.want)
				}
				now = now.Add(time.Second)
			}
		})
	}
}

// TestAcceptQueue: connections a listener has not accepted are counted,
// and leave the count as they are accepted.
func TestAcceptQueue(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	n, err := AcceptQueue(ln)
	if err != nil {
		t.Skipf("no accept queue on this system: %v", err)
	}
	if n != 0 {
		t.Fatalf("queue of a new listener: %d", n)
	}
	for range 5 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	if n, _ := AcceptQueue(ln); n != 5 {
		t.Fatalf("queue after 5 connections: %d, want 5", n)
	}
	for range 2 {
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if n, _ := AcceptQueue(ln); n != 3 {
		t.Fatalf("queue after 2 of 5 were accepted: %d, want 3", n)
	}
}
