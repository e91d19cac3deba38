package doctor

import (
	"net"
	"testing"

	"github.com/mxguard/mxguard/internal/config"
)

// TestListen: an address that can be bound is ok, and stays free; one a
// listener holds is "in use"; one no interface has is said to be so.
func TestListen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().String()

	want(t, Listen([]string{"127.0.0.1:0"}), CheckListen, OK, "127.0.0.1:0 can be bound")
	want(t, Listen([]string{busy}), CheckListen, Fail, busy+" is in use")
	// TEST-NET-3 (RFC 5737): assigned to no host.
	want(t, Listen([]string{"203.0.113.77:0"}), CheckListen, Fail, "no interface of this host has that address")
	want(t, Listen(nil), CheckListen, Fail, "no listen addresses")

	fs := Listen([]string{"127.0.0.1:0", busy})
	if len(fs) != 2 || fs[0].Level != OK || fs[1].Level != Fail {
		t.Errorf("two addresses: %q, want one finding each", fs)
	}
	// The check released what it bound.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := free.Addr().String()
	free.Close()
	want(t, Listen([]string{addr}), CheckListen, OK)
	if l, err := net.Listen("tcp", addr); err != nil {
		t.Errorf("%s after the check: %v; the check must release it", addr, err)
	} else {
		l.Close()
	}
}

// TestListenAddrs: the admin listener is bound at start too.
func TestListenAddrs(t *testing.T) {
	cfg := config.Default()
	cfg.Listen = []string{"127.0.0.1:25"}
	if got := listenAddrs(cfg); len(got) != 1 || got[0] != "127.0.0.1:25" {
		t.Errorf("listenAddrs = %q, want the listen address", got)
	}
	cfg.Admin.Listen = "127.0.0.1:9100"
	if got := listenAddrs(cfg); len(got) != 2 || got[1] != "127.0.0.1:9100" || len(cfg.Listen) != 1 {
		t.Errorf("listenAddrs = %q (listen now %q), want the admin address after it, listen unchanged", got, cfg.Listen)
	}
}
