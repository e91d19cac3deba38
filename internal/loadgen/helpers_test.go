package loadgen

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/smtpsink"
)

// startSink starts smtp-sink with flags on a free loopback port and
// kills it when the test ends. smtp-sink writes each transaction it
// accepts to its own file under Dir/new, so that the files count the
// messages it took and WaitMaildir can watch them arrive. Its backlog is
// deep enough for the floods these tests send.
func startSink(t testing.TB, flags ...string) *smtpsink.Sink {
	t.Helper()
	return smtpsink.Start(t, smtpsink.Options{Flags: flags, Backlog: 256})
}

// messages returns the transactions s has completed so far.
func messages(t testing.TB, s *smtpsink.Sink) []string {
	t.Helper()
	var out []string
	for _, m := range s.Dumps(t) {
		// An empty file is a transaction still open or never completed.
		if m != "" {
			out = append(out, m)
		}
	}
	return out
}

// checkText fails the test unless res's text output holds every one of
// wants.
func checkText(t *testing.T, res interface{ WriteText(io.Writer) error }, wants ...string) {
	t.Helper()
	var text bytes.Buffer
	if err := res.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range wants {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text output lacks %q:\n%s", want, text.String())
		}
	}
}

// viaJSON encodes res as JSON, decodes that into got (a struct with the
// fields a test checks) and returns the encoding for failure messages.
func viaJSON(t *testing.T, res, got any) []byte {
	t.Helper()
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, got); err != nil {
		t.Fatalf("JSON %s: %v", b, err)
	}
	return b
}

// lineServer is a tiny scripted SMTP server for what smtp-sink cannot do:
// refuse commands while offering PIPELINING, or greet with a rejection
// and close. Each connection runs handle; accepted counts connections.
type lineServer struct {
	addr     string
	accepted atomic.Int64
}

// startLineServer listens on a free loopback port and serves each
// connection with handle until the test ends.
func startLineServer(t testing.TB, handle func(c net.Conn)) *lineServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &lineServer{addr: l.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	return s
}

// scripted returns a handler that speaks enough SMTP for a transaction,
// offers PIPELINING, and answers each verb from replies (a verb missing
// there gets 250, DATA 354). It reads commands one line at a time, so
// pipelined commands are answered in order as RFC 2920 requires. It adds
// one to pipelined for each MAIL that arrived with more commands behind it.
// A reply of "(silent)" is never sent: the server reads on until the
// client closes.
func scripted(replies map[string]string, pipelined *atomic.Int64) func(net.Conn) {
	return func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		w := bufio.NewWriter(c)
		reply := func(s string) bool {
			w.WriteString(s + "\r\n")
			// Answer pipelined commands in one write, as servers do.
			if r.Buffered() > 0 {
				return true
			}
			return w.Flush() == nil
		}
		reply("220 scripted ESMTP")
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			verb, _, _ := strings.Cut(strings.TrimSpace(line), " ")
			verb = strings.ToUpper(verb)
			if verb == "MAIL" && r.Buffered() > 0 {
				pipelined.Add(1)
			}
			resp, ok := replies[verb]
			if resp == "(silent)" {
				io.Copy(io.Discard, r)
				return
			}
			switch {
			case ok:
			case verb == "EHLO":
				resp = "250-scripted\r\n250 PIPELINING"
			case verb == "DATA":
				resp = "354 go ahead"
			case verb == "QUIT":
				resp = "221 bye"
			default:
				resp = "250 ok"
			}
			if !reply(resp) {
				return
			}
			if verb == "QUIT" || strings.HasPrefix(resp, "421") {
				w.Flush()
				return
			}
			if verb == "DATA" && strings.HasPrefix(resp, "354") {
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if l == ".\r\n" {
						break
					}
				}
				dot, ok := replies["."]
				if !ok {
					dot = "250 queued"
				}
				if !reply(dot) {
					return
				}
			}
		}
	}
}
