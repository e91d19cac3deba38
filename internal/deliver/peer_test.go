package deliver

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// peer is a scripted SMTP/LMTP server on loopback. It exists only for reply
// sequences that no server installed here produces on demand: smtp-sink
// rejects all RCPTs or none, and offers no STARTTLS. Everything else is
// tested against smtp-sink.
type peer struct {
	lmtp  bool
	ext   []string                 // extension lines after the first EHLO/LHLO line
	rcpt  func(addr string) string // reply to RCPT TO:<addr>; "" hangs up
	final []string                 // replies after the final dot (LMTP: one per accepted RCPT)
	tls   *tls.Config              // answer STARTTLS with 220 and a handshake
	// breakTLS answers STARTTLS with 220 and closes the connection, on the
	// first connection only.
	breakTLS bool
	// stalled, when set, receives a value when a DATA command arrives,
	// which then gets no reply until the client hangs up.
	stalled chan struct{}
	// finalSent, when set, receives the time each final reply to the
	// end of data was written (the last one, for LMTP).
	finalSent chan<- time.Time
	// delay is waited before every reply, as a distant or busy server
	// would take.
	delay time.Duration
	// onQuit, when set, runs when QUIT arrives, before the reply.
	onQuit func()
	// rcptDelay is waited before each reply to RCPT, on top of delay.
	rcptDelay time.Duration

	mu     sync.Mutex
	conns  int
	active int // connections open now
	// maxActive is the most connections that were open at once.
	maxActive int
	bodies    []string
	cmds      []string
}

func (p *peer) start(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				p.serve(c)
			}()
		}
	}()
	return l.Addr().String()
}

func (p *peer) serve(c net.Conn) {
	p.mu.Lock()
	p.conns++
	first := p.conns == 1
	p.active++
	p.maxActive = max(p.maxActive, p.active)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.active--
		p.mu.Unlock()
	}()
	br, w := bufio.NewReader(c), c
	say := func(s string) {
		time.Sleep(p.delay)
		w.Write([]byte(s + "\r\n"))
	}
	say("220 peer ESMTP")
	accepted := 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		p.mu.Lock()
		p.cmds = append(p.cmds, line)
		p.mu.Unlock()
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO", "LHLO":
			lines := append([]string{"peer"}, p.ext...)
			if p.tls != nil || p.breakTLS {
				if _, ok := c.(*tls.Conn); !ok {
					lines = append(lines, "STARTTLS")
				}
			}
			for i, l := range lines {
				sep := "-"
				if i == len(lines)-1 {
					sep = " "
				}
				say("250" + sep + l)
			}
		case "STARTTLS":
			say("220 2.0.0 go ahead")
			if p.breakTLS && first {
				return
			}
			tc := tls.Server(c, p.tls)
			if err := tc.Handshake(); err != nil {
				return
			}
			c, br, w = tc, bufio.NewReader(tc), tc
		case "MAIL":
			accepted = 0
			say("250 2.1.0 ok")
		case "RCPT":
			addr := strings.TrimSuffix(strings.TrimPrefix(arg, "TO:<"), ">")
			rep := "250 2.1.5 ok"
			if p.rcpt != nil {
				rep = p.rcpt(addr)
			}
			if rep == "" {
				return // hang up, as a crashing server would
			}
			time.Sleep(p.rcptDelay)
			if rep[0] == '2' {
				accepted++
			}
			say(rep)
		case "DATA":
			if p.stalled != nil {
				p.stalled <- struct{}{}
				io.Copy(io.Discard, br)
				return
			}
			if accepted == 0 {
				say("554 5.5.1 no valid recipients")
				continue
			}
			say("354 go ahead")
			var body strings.Builder
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				body.WriteString(l)
			}
			p.mu.Lock()
			p.bodies = append(p.bodies, body.String())
			p.mu.Unlock()
			n := 1
			if p.lmtp {
				n = accepted
			}
			for i := 0; i < n; i++ {
				rep := "250 2.0.0 ok"
				if i < len(p.final) {
					rep = p.final[i]
				}
				say(rep)
			}
			if p.finalSent != nil {
				p.finalSent <- time.Now()
			}
		case "RSET":
			accepted = 0
			say("250 2.0.0 ok")
		case "QUIT":
			if p.onQuit != nil {
				p.onQuit()
			}
			say("221 2.0.0 bye")
			return
		default:
			say("502 5.5.2 unknown command")
		}
	}
}
