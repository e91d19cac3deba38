package admit

import (
	"sync"
	"time"
)

// throttle is sendmail's confCONNECTION_RATE_THROTTLE: at most n
// connections start in any one second; the rest are not refused but
// stalled into the following seconds, n per second, in arrival order (the
// seed: 20 connections at 5 per second start in seconds 1, 2, 3 and 4).
//
// Written by hand because a token bucket (golang.org/x/time/rate) smooths
// the excess out at 1/n-second intervals instead of releasing it in
// whole-second batches as sendmail does; the state is two integers.
type throttle struct {
	mu     sync.Mutex
	sec    int64 // the second slots are being handed out in
	used   int   // slots used in sec
	logged int64 // last second a stall was logged
}

// reserve takes the next free slot and returns how long to wait for it.
func (t *throttle) reserve(now time.Time, n int) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := now.Unix()
	if t.sec < cur {
		t.sec, t.used = cur, 0
	}
	if t.used >= n {
		t.sec++
		t.used = 0
	}
	t.used++
	if t.sec == cur {
		return 0
	}
	return time.Unix(t.sec, 0).Sub(now)
}

// shouldLog limits the stall log line to one a second.
func (t *throttle) shouldLog(now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := now.Unix(); s != t.logged {
		t.logged = s
		return true
	}
	return false
}
