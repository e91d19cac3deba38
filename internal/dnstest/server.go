package dnstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// waitTimeout bounds Server.WaitQueries so that a broken test fails instead
// of hanging.
const waitTimeout = 10 * time.Second

// Listen opens a UDP socket and a TCP listener on the same address, as a DNS
// server needs. With port 0 it picks a port that is free for both.
func Listen(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dnstest: listen address %q: %w", addr, err)
	}
	// A free UDP port may be taken for TCP by someone else; a few tries
	// make that race harmless.
	tries := 1
	if port == "0" {
		tries = 10
	}
	for {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		_, bound, _ := net.SplitHostPort(pc.LocalAddr().String())
		ln, err := net.Listen("tcp", net.JoinHostPort(host, bound))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if tries--; tries == 0 {
			return nil, nil, err
		}
	}
}

// Serve answers DNS queries on pc and ln with h until ctx is done, then
// shuts both down and closes them. It returns early only if serving fails.
func Serve(ctx context.Context, pc net.PacketConn, ln net.Listener, h dns.Handler) error {
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	servers := []*dns.Server{
		{PacketConn: pc, Handler: h, NotifyStartedFunc: notify},
		{Listener: ln, Handler: h, NotifyStartedFunc: notify},
	}
	errc := make(chan error, len(servers))
	for _, s := range servers {
		go func() { errc <- s.ActivateAndServe() }()
	}
	// ShutdownContext refuses a server that has not started yet.
	for range servers {
		select {
		case <-started:
		case err := <-errc:
			pc.Close()
			ln.Close()
			return fmt.Errorf("dnstest: serve: %w", err)
		}
	}

	var failed error
	select {
	case <-ctx.Done():
	case failed = <-errc:
		failed = fmt.Errorf("dnstest: serve: %w", failed)
	}
	for _, s := range servers {
		s.Shutdown() // one that failed is reported above
	}
	return failed
}

// A Server is a DNS server for one test, listening on 127.0.0.1 over UDP
// and TCP. Its methods fail the test on invalid records.
type Server struct {
	// Addr is the "127.0.0.1:port" to send queries to.
	Addr string

	t      testing.TB
	zone   *Zone
	cancel context.CancelFunc
	done   chan error
}

// Start serves the records rrs (zone-file syntax, see [Zone.Add]) until the
// test ends.
func Start(t testing.TB, rrs ...string) *Server {
	t.Helper()
	zone := NewZone()
	if err := zone.Add(rrs...); err != nil {
		t.Fatal(err)
	}
	pc, ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		Addr:   pc.LocalAddr().String(),
		t:      t,
		zone:   zone,
		cancel: cancel,
		done:   make(chan error, 1),
	}
	go func() { s.done <- Serve(ctx, pc, ln, zone) }()
	t.Cleanup(s.Close)
	return s
}

// Close stops the server; queries sent afterwards are refused. It is called
// when the test ends, and may be called earlier to simulate a server that
// went away.
func (s *Server) Close() {
	s.t.Helper()
	if s.cancel == nil {
		return
	}
	s.zone.Close()
	s.cancel()
	s.cancel = nil
	if err := <-s.done; err != nil && !errors.Is(err, net.ErrClosed) {
		s.t.Errorf("dnstest: %v", err)
	}
}

// Zone returns the records the server answers from.
func (s *Server) Zone() *Zone { return s.zone }

// Add adds records in zone-file syntax.
func (s *Server) Add(rrs ...string) {
	s.t.Helper()
	if err := s.zone.Add(rrs...); err != nil {
		s.t.Fatal(err)
	}
}

// Remove deletes records (compared without their TTL).
func (s *Server) Remove(rrs ...string) {
	s.t.Helper()
	if err := s.zone.Remove(rrs...); err != nil {
		s.t.Fatal(err)
	}
}

// SetDelay delays answers for name by d; see [Zone.SetDelay].
func (s *Server) SetDelay(name string, d time.Duration) { s.zone.SetDelay(name, d) }

// SetServfail makes queries for name fail with SERVFAIL while fail is true.
func (s *Server) SetServfail(name string, fail bool) { s.zone.SetServfail(name, fail) }

// Queries reports how many queries the server has received.
func (s *Server) Queries() int { return s.zone.Queries() }

// QueryCount reports how many queries for name and qtype it has received.
func (s *Server) QueryCount(name string, qtype uint16) int { return s.zone.QueryCount(name, qtype) }

// WaitQueries waits until the server has received at least n queries, and
// fails the test if that takes more than ten seconds. Call it from the test's
// own goroutine.
func (s *Server) WaitQueries(n int) {
	s.t.Helper()
	if !s.zone.WaitQueries(n, waitTimeout) {
		s.t.Fatalf("dnstest: got %d queries, want at least %d", s.zone.Queries(), n)
	}
}
