package smtpsink

import (
	"net"
	"net/smtp"
	"strings"
	"testing"
	"time"
)

func TestSink(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want int // completed transactions after one message
	}{
		{"tcp", Options{}, 1},
		{"unix", Options{Unix: true}, 1},
		{"rejects RCPT", Options{Flags: []string{"-r", "RCPT"}, Backlog: 256}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Start(t, tt.opts)
			c, err := net.DialTimeout(s.Network, s.Addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			sc, err := smtp.NewClient(c, "sink")
			if err != nil {
				t.Fatal(err)
			}
			err = send(sc, "a@example.org", "b@example.org", "Subject: hi\r\n\r\nhello sink\r\n")
			if (err == nil) != (tt.want == 1) {
				t.Fatalf("send: %v", err)
			}
			sc.Quit()
			var done []string
			for _, d := range s.Dumps(t) {
				if d != "" {
					done = append(done, d)
				}
			}
			if len(done) != tt.want {
				t.Fatalf("%d completed dumps, want %d: %q", len(done), tt.want, done)
			}
			if tt.want == 1 && !strings.Contains(done[0], "hello sink") {
				t.Errorf("dump lacks the body:\n%s", done[0])
			}

			s.Stop()
			s.Stop() // a second Stop is harmless
			if c, err := net.DialTimeout(s.Network, s.Addr, time.Second); err == nil {
				c.Close()
				t.Error("sink still accepts connections after Stop")
			}
		})
	}
}

// send is one transaction on sc.
func send(sc *smtp.Client, from, to, msg string) error {
	if err := sc.Mail(from); err != nil {
		return err
	}
	if err := sc.Rcpt(to); err != nil {
		return err
	}
	w, err := sc.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		return err
	}
	return w.Close()
}

// TestSinkCounts: with Count, the sink counts one session per connection
// (not Start's own check), each QUIT and each message.
func TestSinkCounts(t *testing.T) {
	s := Start(t, Options{Count: true})
	for range 2 {
		c, err := net.DialTimeout(s.Network, s.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		sc, err := smtp.NewClient(c, "sink")
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if err := send(sc, "a@example.org", "b@example.org", "Subject: hi\r\n\r\nhello\r\n"); err != nil {
				t.Fatal(err)
			}
		}
		if err := sc.Quit(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		sess, quit, mesg := s.Counts(t)
		if sess == 2 && quit == 2 && mesg == 6 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("counted %d sessions, %d QUITs, %d messages; want 2, 2, 6", sess, quit, mesg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
