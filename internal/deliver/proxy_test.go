package deliver

import (
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// proxy forwards connections to a real server and counts them, so that a
// test can see how many connections a client opened and how many were
// open at once, which smtp-sink does not report.
type proxy struct {
	mu        sync.Mutex
	total     int
	active    int
	maxActive int
}

// startProxy listens on a free loopback port, or on a unix socket when
// network is "unix", and forwards every connection to target (on the same
// network). It returns its address and stops when the test ends.
func startProxy(t testing.TB, network, target string) (*proxy, string) {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "proxy.sock")
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{}
	var wg sync.WaitGroup
	var cmu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		l.Close()
		cmu.Lock()
		for _, c := range open {
			c.Close()
		}
		cmu.Unlock()
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
			up, err := net.DialTimeout(network, target, 5*time.Second)
			if err != nil {
				c.Close()
				continue
			}
			cmu.Lock()
			open = append(open, c, up)
			cmu.Unlock()
			p.mu.Lock()
			p.total++
			p.active++
			p.maxActive = max(p.maxActive, p.active)
			p.mu.Unlock()
			wg.Add(2)
			var once sync.Once
			done := func() {
				once.Do(func() {
					c.Close()
					up.Close()
					p.mu.Lock()
					p.active--
					p.mu.Unlock()
				})
			}
			go func() {
				defer wg.Done()
				io.Copy(up, c)
				done()
			}()
			go func() {
				defer wg.Done()
				io.Copy(c, up)
				done()
			}()
		}
	}()
	return p, l.Addr().String()
}

func (p *proxy) counts() (total, active, maxActive int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total, p.active, p.maxActive
}
