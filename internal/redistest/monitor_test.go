package redistest

import (
	"bufio"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// send writes one command in RESP and reads its reply's first line.
func send(t *testing.T, c net.Conn, r *bufio.Reader, args ...string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return line
}

// TestMonitor checks that Take returns each command a client sent, once,
// in order, without the commands a script ran.
func TestMonitor(t *testing.T) {
	addr := Start(t)
	m := NewMonitor(t, addr)
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)

	if got := m.Take(); len(got) != 0 {
		t.Errorf("nothing sent yet: %v", got)
	}
	send(t, c, r, "SET", "a", "1")
	send(t, c, r, "EVAL", "redis.call('INCR', KEYS[1]); return redis.call('GET', KEYS[1])", "1", "a")
	send(t, c, r, "ECHO", `a "quoted" [0 lua] argument`)
	if got, want := m.Take(), []string{"set", "eval", "echo"}; !slices.Equal(got, want) {
		t.Errorf("Take = %v, want %v", got, want)
	}
	send(t, c, r, "GET", "a")
	if got, want := m.Take(), []string{"get"}; !slices.Equal(got, want) {
		t.Errorf("second Take = %v, want %v", got, want)
	}
}
