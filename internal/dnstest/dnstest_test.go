package dnstest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// ask sends one query for name and qtype over network ("udp" or "tcp"),
// with an EDNS0 buffer of bufsize bytes when bufsize is not 0.
func ask(t *testing.T, s *Server, network, name string, qtype uint16, bufsize uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if bufsize != 0 {
		m.SetEdns0(bufsize, false)
	}
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	resp, _, err := c.Exchange(m, s.Addr)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", name, dns.TypeToString[qtype], network, err)
	}
	return resp
}

// rdata returns the answer section in zone-file syntax, without the headers.
func rdata(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		out = append(out, strings.TrimPrefix(rr.String(), rr.Header().String()))
	}
	return out
}

func TestAnswers(t *testing.T) {
	s := Start(t,
		"host5.adsl.alicedsl.de. 60 IN A 127.0.0.5",
		"5.0.0.127.in-addr.arpa. 60 IN PTR host5.adsl.alicedsl.de.",
		"alias.example. 60 IN CNAME host5.adsl.alicedsl.de.",
		"dangling.example. 60 IN CNAME nowhere.example.",
		"loop1.example. 60 IN CNAME loop2.example.",
		"loop2.example. 60 IN CNAME loop1.example.",
		"a.b.example. 60 IN A 127.0.0.7",
	)
	tests := []struct {
		name  string
		qtype uint16
		rcode int
		want  []string
	}{
		{"host5.adsl.alicedsl.de.", dns.TypeA, dns.RcodeSuccess, []string{"127.0.0.5"}},
		{"HOST5.adsl.AliceDSL.de.", dns.TypeA, dns.RcodeSuccess, []string{"127.0.0.5"}},
		{"5.0.0.127.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess, []string{"host5.adsl.alicedsl.de."}},
		{"host5.adsl.alicedsl.de.", dns.TypeAAAA, dns.RcodeSuccess, nil},
		{"unknown.example.", dns.TypeA, dns.RcodeNameError, nil},
		{"b.example.", dns.TypeA, dns.RcodeSuccess, nil}, // empty non-terminal
		{"alias.example.", dns.TypeA, dns.RcodeSuccess, []string{"host5.adsl.alicedsl.de.", "127.0.0.5"}},
		{"alias.example.", dns.TypeCNAME, dns.RcodeSuccess, []string{"host5.adsl.alicedsl.de."}},
		{"dangling.example.", dns.TypeA, dns.RcodeNameError, []string{"nowhere.example."}},
	}
	for _, tt := range tests {
		for _, network := range []string{"udp", "tcp"} {
			resp := ask(t, s, network, tt.name, tt.qtype, 0)
			if resp.Rcode != tt.rcode || !slices.Equal(rdata(resp), tt.want) {
				t.Errorf("%s %s over %s = %s %q, want %s %q", tt.name, dns.TypeToString[tt.qtype], network,
					dns.RcodeToString[resp.Rcode], rdata(resp), dns.RcodeToString[tt.rcode], tt.want)
			}
		}
	}
	// A CNAME loop must end in an answer, not a hang.
	if resp := ask(t, s, "udp", "loop1.example.", dns.TypeA, 0); len(resp.Answer) != maxChain {
		t.Errorf("CNAME loop: %d records, want %d", len(resp.Answer), maxChain)
	}
}

func TestTruncation(t *testing.T) {
	s := Start(t)
	for i := range 200 {
		s.Add(fmt.Sprintf("big.example. 60 IN A 127.1.%d.%d", i/100, i%100+1))
	}
	tests := []struct {
		network   string
		bufsize   uint16
		truncated bool
	}{
		{"udp", 0, true},
		{"udp", 1232, true},
		{"udp", 4096, false},
		{"tcp", 0, false},
	}
	for _, tt := range tests {
		resp := ask(t, s, tt.network, "big.example.", dns.TypeA, tt.bufsize)
		if resp.Truncated != tt.truncated {
			t.Errorf("over %s with buffer %d: truncated %v, want %v", tt.network, tt.bufsize, resp.Truncated, tt.truncated)
		}
		if !tt.truncated && len(resp.Answer) != 200 {
			t.Errorf("over %s with buffer %d: %d records, want 200", tt.network, tt.bufsize, len(resp.Answer))
		}
	}
}

func TestAddRemove(t *testing.T) {
	s := Start(t, "h.example. 60 IN A 127.0.0.1", "h.example. 60 IN A 127.0.0.2")
	s.Add("h.example. 300 IN A 127.0.0.1") // replaces, with a new TTL
	resp := ask(t, s, "udp", "h.example.", dns.TypeA, 0)
	if got, want := rdata(resp), []string{"127.0.0.2", "127.0.0.1"}; !slices.Equal(got, want) {
		t.Errorf("after re-adding: %q, want %q", got, want)
	}
	if ttl := resp.Answer[1].Header().Ttl; ttl != 300 {
		t.Errorf("re-added record has TTL %d, want 300", ttl)
	}

	s.Remove("h.example. 0 IN A 127.0.0.2")
	if got := rdata(ask(t, s, "udp", "h.example.", dns.TypeA, 0)); !slices.Equal(got, []string{"127.0.0.1"}) {
		t.Errorf("after removing one: %q", got)
	}
	s.Remove("h.example. 0 IN A 127.0.0.1")
	if resp := ask(t, s, "udp", "h.example.", dns.TypeA, 0); resp.Rcode != dns.RcodeNameError {
		t.Errorf("after removing all: %s, want NXDOMAIN", dns.RcodeToString[resp.Rcode])
	}
}

func TestInvalidRecords(t *testing.T) {
	z := NewZone()
	for _, rr := range []string{"", "h.example. 60 IN A not-an-address", "h.example. 60 IN BOGUS x"} {
		if err := z.Add("ok.example. 60 IN A 127.0.0.1", rr); err == nil {
			t.Errorf("Add(%q) succeeded", rr)
		}
		if err := z.Remove(rr); err == nil {
			t.Errorf("Remove(%q) succeeded", rr)
		}
	}
	if len(z.rrs) != 0 {
		t.Errorf("a failed Add added records: %v", z.rrs)
	}
}

func TestServfail(t *testing.T) {
	s := Start(t, "h.example. 60 IN A 127.0.0.1", "alias.example. 60 IN CNAME h.example.")
	s.SetServfail("H.example", true)
	for _, name := range []string{"h.example.", "alias.example."} {
		if resp := ask(t, s, "udp", name, dns.TypeA, 0); resp.Rcode != dns.RcodeServerFailure || len(resp.Answer) != 0 {
			t.Errorf("%s: %s with %d records, want SERVFAIL and none", name, dns.RcodeToString[resp.Rcode], len(resp.Answer))
		}
	}
	s.SetServfail("h.example.", false)
	if resp := ask(t, s, "udp", "h.example.", dns.TypeA, 0); resp.Rcode != dns.RcodeSuccess {
		t.Errorf("after clearing: %s", dns.RcodeToString[resp.Rcode])
	}
}

func TestDelay(t *testing.T) {
	s := Start(t, "h.example. 60 IN A 127.0.0.1")
	s.SetDelay("h.example.", time.Minute)

	// A client with a short timeout gives up.
	m := new(dns.Msg)
	m.SetQuestion("h.example.", dns.TypeA)
	c := &dns.Client{Timeout: 100 * time.Millisecond}
	if _, _, err := c.Exchange(m, s.Addr); err == nil {
		t.Error("delayed answer arrived within 100ms")
	}

	// A held answer is released by lifting the delay.
	done := make(chan *dns.Msg)
	go func() {
		c := &dns.Client{Timeout: 10 * time.Second}
		resp, _, err := c.Exchange(m, s.Addr)
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	s.WaitQueries(2)
	s.SetDelay("h.example.", 0)
	if resp := <-done; resp == nil || len(resp.Answer) != 1 {
		t.Errorf("released answer: %v", resp)
	}

	// Other names are not delayed.
	start := time.Now()
	ask(t, s, "udp", "other.example.", dns.TypeA, 0)
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("undelayed name took %v", elapsed)
	}
}

func TestCloseReleasesDelayed(t *testing.T) {
	s := Start(t, "h.example. 60 IN A 127.0.0.1")
	s.SetDelay("h.example.", time.Hour)
	go func() {
		m := new(dns.Msg)
		m.SetQuestion("h.example.", dns.TypeA)
		c := &dns.Client{Net: "tcp", Timeout: 10 * time.Second}
		c.Exchange(m, s.Addr) // the server goes away under it
	}()
	s.WaitQueries(1)
	done := make(chan struct{})
	go func() {
		s.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for a delayed answer")
	}
	m := new(dns.Msg)
	m.SetQuestion("h.example.", dns.TypeA)
	c := &dns.Client{Net: "tcp", Timeout: time.Second}
	if _, _, err := c.Exchange(m, s.Addr); err == nil {
		t.Error("closed server still answers over TCP")
	}
}

func TestQueryCounts(t *testing.T) {
	s := Start(t, "h.example. 60 IN A 127.0.0.1")
	ask(t, s, "udp", "h.example.", dns.TypeA, 0)
	ask(t, s, "tcp", "H.EXAMPLE.", dns.TypeA, 0)
	ask(t, s, "udp", "h.example.", dns.TypeAAAA, 0)
	ask(t, s, "udp", "x.example.", dns.TypeA, 0)
	if n := s.Queries(); n != 4 {
		t.Errorf("Queries() = %d, want 4", n)
	}
	if n := s.QueryCount("h.example", dns.TypeA); n != 2 {
		t.Errorf("QueryCount(h.example, A) = %d, want 2", n)
	}
	if n := s.QueryCount("h.example.", dns.TypeAAAA); n != 1 {
		t.Errorf("QueryCount(h.example, AAAA) = %d, want 1", n)
	}
}

func TestLoad(t *testing.T) {
	const zone = `$ORIGIN alicedsl.de.
$TTL 120
host5.adsl  IN A 127.0.0.5   ; a comment
$ORIGIN 0.0.127.in-addr.arpa.
5           IN PTR host5.adsl.alicedsl.de.
`
	z := NewZone()
	if err := z.Load(strings.NewReader(zone), "test.zone"); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"host5.adsl.alicedsl.de.": "host5.adsl.alicedsl.de.\t120\tIN\tA\t127.0.0.5",
		"5.0.0.127.in-addr.arpa.": "5.0.0.127.in-addr.arpa.\t120\tIN\tPTR\thost5.adsl.alicedsl.de.",
	} {
		if got := z.rrs[name]; len(got) != 1 || got[0].String() != want {
			t.Errorf("%s: %v, want %q", name, got, want)
		}
	}

	for _, bad := range []string{
		"h.example. 60 IN A 300.0.0.1\n",
		"$INCLUDE /etc/passwd\n",
		"h.example. 60 IN NOSUCHTYPE x\n",
	} {
		z := NewZone()
		err := z.Load(strings.NewReader(bad), "bad.zone")
		if err == nil || !strings.Contains(err.Error(), "bad.zone") {
			t.Errorf("Load(%q) = %v, want an error naming the file", bad, err)
		}
		if len(z.rrs) != 0 {
			t.Errorf("Load(%q) added records: %v", bad, z.rrs)
		}
	}
}

func TestListenPortTaken(t *testing.T) {
	pc, ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close(); ln.Close() })
	if pc.LocalAddr().String() != ln.Addr().String() {
		t.Errorf("UDP on %s, TCP on %s", pc.LocalAddr(), ln.Addr())
	}
	if _, _, err := Listen(ln.Addr().String()); err == nil {
		t.Error("Listen on a taken port succeeded")
	}
	if _, _, err := Listen("127.0.0.1"); err == nil {
		t.Error("Listen without a port succeeded")
	}
}

func TestNegativeSOA(t *testing.T) {
	const soa = "bl.example. 900 IN SOA ns.bl.example. hostmaster.bl.example. 1 3600 600 86400 300"
	s := Start(t, soa,
		"2.0.0.127.bl.example. 60 IN A 127.0.0.2",
		"nodata.example. 60 IN A 127.0.0.1")
	tests := []struct {
		name  string
		rcode int
		ns    []string
	}{
		{"9.0.0.127.bl.example.", dns.RcodeNameError, []string{soa}},   // NXDOMAIN below the SOA
		{"2.0.0.127.bl.example.", dns.RcodeSuccess, nil},               // an answer has none
		{"bl.example.", dns.RcodeSuccess, []string{soa}},               // NODATA at the apex
		{"0.0.127.bl.example.", dns.RcodeSuccess, []string{soa}},       // NODATA, empty non-terminal
		{"x.nodata.example.", dns.RcodeNameError, nil},                 // no SOA above it
		{"nodata.example.", dns.RcodeSuccess, nil},                     // NODATA without an SOA
		{"2.0.0.127.BL.example.", dns.RcodeSuccess, nil},               // case does not matter
		{"1.2.0.0.127.bl.example.", dns.RcodeNameError, []string{soa}}, // deeper
	}
	for _, tt := range tests {
		qtype := dns.TypeA
		if tt.name == "bl.example." || tt.name == "nodata.example." {
			qtype = dns.TypeTXT
		}
		resp := ask(t, s, "udp", tt.name, qtype, 0)
		var ns []string
		for _, rr := range resp.Ns {
			ns = append(ns, rr.String())
		}
		want := make([]string, len(tt.ns))
		for i, r := range tt.ns {
			rr, _ := dns.NewRR(r)
			want[i] = rr.String()
		}
		if resp.Rcode != tt.rcode || !slices.Equal(ns, want) {
			t.Errorf("%s: %s with authority %q, want %s with %q", tt.name,
				dns.RcodeToString[resp.Rcode], ns, dns.RcodeToString[tt.rcode], want)
		}
	}
}
