package redistest

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// takeTimeout bounds how long Take waits for the server to show its mark.
const takeTimeout = 10 * time.Second

// Monitor records the commands that clients send to a server, as the
// server saw them (MONITOR), for tests that count round trips: what a
// script runs inside the server is left out.
type Monitor struct {
	t     testing.TB
	mon   net.Conn // in MONITOR mode
	ctl   net.Conn // sends the marks
	ctlR  *bufio.Reader
	lines chan string
	marks atomic.Uint64
}

// NewMonitor starts recording the commands sent to the server at addr. It is
// stopped in t.Cleanup.
func NewMonitor(t testing.TB, addr string) *Monitor {
	t.Helper()
	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatalf("redistest: monitor: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	m := &Monitor{t: t, mon: dial(), ctl: dial(), lines: make(chan string, 1024)}
	m.ctlR = bufio.NewReader(m.ctl)
	if _, err := m.mon.Write([]byte("*1\r\n$7\r\nMONITOR\r\n")); err != nil {
		t.Fatalf("redistest: monitor: %v", err)
	}
	r := bufio.NewReader(m.mon)
	_ = m.mon.SetReadDeadline(time.Now().Add(startTimeout))
	if line, err := r.ReadString('\n'); err != nil || line != "+OK\r\n" {
		t.Fatalf("redistest: MONITOR answered %q, %v", line, err)
	}
	_ = m.mon.SetReadDeadline(time.Time{})
	go func() {
		defer close(m.lines)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			m.lines <- strings.TrimRight(line, "\r\n")
		}
	}()
	return m
}

// Take returns the names of the commands (lower case, "evalsha") that
// clients sent since the previous Take, or since NewMonitor, in the order
// the server ran them. Commands that were answered before Take was called
// are all in; it waits for the server to show a mark of its own to know.
func (m *Monitor) Take() []string {
	m.t.Helper()
	mark := "redistest-mark-" + strconv.FormatUint(m.marks.Add(1), 10)
	_ = m.ctl.SetDeadline(time.Now().Add(takeTimeout))
	cmd := fmt.Sprintf("*2\r\n$4\r\nECHO\r\n$%d\r\n%s\r\n", len(mark), mark)
	if _, err := m.ctl.Write([]byte(cmd)); err != nil {
		m.t.Fatalf("redistest: monitor mark: %v", err)
	}
	if _, err := m.ctlR.ReadString('\n'); err != nil { // $N
		m.t.Fatalf("redistest: monitor mark: %v", err)
	}
	if _, err := m.ctlR.ReadString('\n'); err != nil { // the mark
		m.t.Fatalf("redistest: monitor mark: %v", err)
	}
	var cmds []string
	deadline := time.After(takeTimeout)
	for {
		select {
		case line, ok := <-m.lines:
			if !ok {
				m.t.Fatal("redistest: the MONITOR connection closed")
			}
			if strings.Contains(line, `"`+mark+`"`) {
				return cmds
			}
			if name, ok := clientCommand(line); ok {
				cmds = append(cmds, name)
			}
		case <-deadline:
			m.t.Fatalf("redistest: the mark did not show within %v; commands so far %v", takeTimeout, cmds)
		}
	}
}

// clientCommand reads a MONITOR line, such as
//
//	+1700000000.123456 [0 127.0.0.1:5555] "evalsha" "ab12..." "1" "key"
//
// and returns the command's name, or false for one a script ran
// ("[0 lua]").
func clientCommand(line string) (string, bool) {
	open := strings.IndexByte(line, '[')
	end := strings.Index(line, `] "`)
	if open < 0 || end < open {
		return "", false
	}
	if strings.HasSuffix(line[open:end], " lua") {
		return "", false
	}
	rest := line[end+3:]
	name, _, ok := strings.Cut(rest, `"`)
	if !ok {
		return "", false
	}
	return strings.ToLower(name), true
}
