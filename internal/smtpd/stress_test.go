package smtpd

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestStressWakesWaitingSessions: a session already waiting for a command
// under its own hour-long timeout is held to the stress profile's timeout,
// counted from when its wait began, as soon as the server goes under
// stress; lifting stress gives sessions their own timeouts back.
func TestStressWakesWaitingSessions(t *testing.T) {
	var srv *Server
	addr := testServer(t, Config{Timeouts: uniform(time.Hour)}, &memHandler{}, ConnInfo{}, func(s *Server) { srv = s })
	nc, br := dial(t, addr)
	expect(t, br, "220")
	fmt.Fprintf(nc, "EHLO c\r\n")
	expect(t, br, "250")
	srv.SetStress(&Stress{CommandTimeout: 300 * time.Millisecond})
	expect(t, br, "421 4.4.2 ") // within dial's 20 s read deadline, not the hour

	srv.SetStress(nil)
	nc, br = dial(t, addr)
	expect(t, br, "220")
	fmt.Fprintf(nc, "EHLO c\r\n")
	expect(t, br, "250")
	time.Sleep(500 * time.Millisecond) // past the profile's timeout, within the session's own
	fmt.Fprintf(nc, "NOOP\r\n")
	expect(t, br, "250")
}

// TestStressTogglesRace: the server going in and out of stress while
// sessions run commands in time (the race of a wake-up with the end of a
// wait) never cuts a session: every command gets its reply.
func TestStressTogglesRace(t *testing.T) {
	var srv *Server
	addr := testServer(t, Config{Timeouts: uniform(time.Hour)}, &memHandler{}, ConnInfo{}, func(s *Server) { srv = s })
	stop := make(chan struct{})
	var toggler sync.WaitGroup
	toggler.Go(func() {
		on := &Stress{CommandTimeout: 5 * time.Second}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				srv.SetStress(on)
			} else {
				srv.SetStress(nil)
			}
			time.Sleep(50 * time.Microsecond)
		}
	})
	var sessions sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		nc, br := dial(t, addr)
		sessions.Go(func() {
			// want reads one reply and checks its code (t.Fatal is for
			// the test's own goroutine).
			want := func(code string) error {
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return fmt.Errorf("waiting for %s: %v", code, err)
					}
					if len(line) > 3 && line[3] == '-' {
						continue
					}
					if !strings.HasPrefix(line, code) {
						return fmt.Errorf("got %q, want %s", line, code)
					}
					return nil
				}
			}
			err := want("220")
			fmt.Fprintf(nc, "EHLO c\r\n")
			if err == nil {
				err = want("250")
			}
			for i := 0; i < 300 && err == nil; i++ {
				fmt.Fprintf(nc, "MAIL FROM:<a@example.org>\r\n")
				if err = want("250"); err == nil {
					fmt.Fprintf(nc, "RSET\r\n")
					err = want("250")
				}
			}
			errs <- err
		})
	}
	sessions.Wait()
	close(stop)
	toggler.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}
