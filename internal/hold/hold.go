// Package hold keeps connections that must stay silent for a while, the
// clients in the greeting pause, without a goroutine each.
//
// Go parks one goroutine per blocked Read, and that goroutine's stack
// (4 KiB once a session has run a little) is most of what a waiting
// connection costs; in a flood, the waiting clients are nearly all in the
// greeting pause. A Holder watches their sockets instead, in an epoll set of
// its own, with one goroutine and one heap of deadlines, as Postfix's
// postscreen holds them in one event-driven process. It calls back when a
// client talks or leaves, when its time is up, or when the hold is ended.
// It never reads from a socket: what a client sent stays in the kernel for
// the caller's own Read, through the net.Conn it never stopped owning.
//
// Written by hand because no library does only this: the event-loop
// frameworks (gnet, evio, nbio) replace net.Conn and the runtime's poller
// for the whole connection, where mxguard needs them again the moment the
// pause is over.
package hold

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"syscall"
	"time"
)

// Result is why a hold ended.
type Result uint8

const (
	// Elapsed: the time was up and the client had sent nothing.
	Elapsed Result = iota + 1
	// Ready: the socket became readable: the client sent something, closed
	// its side, or the connection failed. A Read tells which, at once.
	Ready
	// Ended: End was called, or the holder stopped (its Run's context is
	// done).
	Ended
)

func (r Result) String() string {
	switch r {
	case Elapsed:
		return "elapsed"
	case Ready:
		return "ready"
	case Ended:
		return "ended"
	}
	return "unknown"
}

// ErrNotRunning is Hold's error before Run has started and once it has
// stopped.
var ErrNotRunning = errors.New("hold: holder not running")

// ErrUnsupported is Run's error where there is no epoll; Hold then always
// fails, and its callers wait in a goroutine each.
var ErrUnsupported = errors.New("hold: not supported on this system")

// A Ticket is one connection held. Its done runs exactly once.
type Ticket struct {
	fd    int32
	gen   uint32 // tells this hold from an earlier one on the same descriptor number
	until int64  // nanoseconds since the holder's base
	index int    // in the deadline heap; -1 once the hold is over
	done  func(Result)
}

// Holder holds connections; see the package comment. It holds nothing
// until Run starts, and nothing once Run is over. Its methods are safe for
// concurrent use.
type Holder struct {
	p    poller
	base time.Time // deadlines count from here on the monotonic clock

	mu      sync.Mutex
	byFD    map[int32]*Ticket
	due     deadlines
	gen     uint32
	running bool   // Run is running and its ctx is not done
	taken   uint64 // holds taken, ever
}

// New returns a Holder, idle until Run.
func New() *Holder {
	return &Holder{base: time.Now(), byFD: make(map[int32]*Ticket)}
}

// Hold watches c until until, or until it turns readable, or End. done is
// called once, from the holder's goroutine (or End's caller): it must not
// block, and typically starts a goroutine to go on with the connection.
// The caller must leave c alone meanwhile, and above all not close it.
// Hold fails (and done is never called) when the holder is not running or
// c has no descriptor to watch; the caller then waits as it would without a
// holder.
func (h *Holder) Hold(c syscall.Conn, until time.Time, done func(Result)) (*Ticket, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	t := &Ticket{until: int64(until.Sub(h.base)), index: -1, done: done}
	var herr error
	// Inside Control the descriptor cannot be closed under us.
	if err := rc.Control(func(fd uintptr) { herr = h.add(t, int32(fd)) }); err != nil {
		return nil, err
	}
	if herr != nil {
		return nil, herr
	}
	return t, nil
}

// HoldFD is Hold for a descriptor the caller took out of its net.Conn
// (Detach), so that nothing of the runtime's poller stays with it.
func (h *Holder) HoldFD(fd int, until time.Time, done func(Result)) (*Ticket, error) {
	t := &Ticket{until: int64(until.Sub(h.base)), index: -1, done: done}
	if err := h.add(t, int32(fd)); err != nil {
		return nil, err
	}
	return t, nil
}

func (h *Holder) add(t *Ticket, fd int32) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.running {
		return ErrNotRunning
	}
	if _, dup := h.byFD[fd]; dup {
		// Only if a held connection was closed by its owner, which the
		// contract forbids; refuse rather than confuse the two.
		return errors.New("hold: descriptor already held")
	}
	h.gen++
	t.fd, t.gen = fd, h.gen
	if err := h.p.add(fd, t.gen); err != nil {
		return err
	}
	h.byFD[fd] = t
	h.taken++
	heap.Push(&h.due, t)
	if t.index == 0 {
		h.p.setDeadline(h.deadline()) // a new earliest: the wait in Run is too long now
	}
	return nil
}

// End ends t's hold now with Ended, unless it is over already.
func (h *Holder) End(t *Ticket) {
	h.mu.Lock()
	held := t.index >= 0
	if held {
		h.remove(t)
	}
	h.mu.Unlock()
	if held {
		t.done(Ended)
	}
}

// Running reports whether Run is running: whether Hold can succeed.
func (h *Holder) Running() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.running
}

// Taken is the number of holds taken since New.
func (h *Holder) Taken() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.taken
}

// Len is the number of connections held now.
func (h *Holder) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.byFD)
}

// remove takes t out of the heap, the index and the epoll set; h.mu held.
func (h *Holder) remove(t *Ticket) {
	heap.Remove(&h.due, t.index)
	delete(h.byFD, t.fd)
	h.p.del(t.fd)
}

type fired struct {
	t *Ticket
	r Result
}

// Run holds connections until ctx is done; then it ends every hold left
// with Ended, releases its descriptors and returns nil. It returns at once
// with an error if it cannot watch sockets here (ErrUnsupported). Run
// once.
func (h *Holder) Run(ctx context.Context) error {
	p, err := newPoller()
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.p, h.running = p, true
	h.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		h.mu.Lock()
		h.running = false
		h.p.setDeadline(time.Unix(1, 0)) // the wait returns at once
		h.mu.Unlock()
	})
	defer stop()
	var (
		ready []event
		fire  []fired
	)
	for {
		h.mu.Lock()
		running := h.running
		if running {
			// Under h.mu, as Hold sets an earlier one: the last word is
			// the heap's.
			h.p.setDeadline(h.deadline())
		}
		h.mu.Unlock()
		if !running {
			break
		}
		ready = h.p.wait(ready[:0])

		h.mu.Lock()
		for _, ev := range ready {
			if t := h.byFD[ev.fd]; t != nil && t.gen == ev.gen {
				h.remove(t)
				fire = append(fire, fired{t, Ready})
			}
		}
		now := int64(time.Since(h.base))
		for len(h.due) > 0 && h.due[0].until <= now {
			t := h.due[0]
			h.remove(t)
			fire = append(fire, fired{t, Elapsed})
		}
		h.mu.Unlock()
		for i, f := range fire {
			f.t.done(f.r)
			fire[i] = fired{}
		}
		fire = fire[:0]
	}
	h.mu.Lock()
	for _, t := range h.byFD {
		h.remove(t)
		fire = append(fire, fired{t, Ended})
	}
	h.mu.Unlock()
	for _, f := range fire {
		f.t.done(f.r)
	}
	h.p.close()
	return nil
}

// deadline is when the earliest hold is up; zero when none is held.
// h.mu held.
func (h *Holder) deadline() time.Time {
	if len(h.due) == 0 {
		return time.Time{}
	}
	return h.base.Add(time.Duration(h.due[0].until))
}

// deadlines is a min-heap of tickets by deadline (container/heap).
type deadlines []*Ticket

func (d deadlines) Len() int           { return len(d) }
func (d deadlines) Less(i, j int) bool { return d[i].until < d[j].until }
func (d deadlines) Swap(i, j int) {
	d[i], d[j] = d[j], d[i]
	d[i].index, d[j].index = i, j
}
func (d *deadlines) Push(x any) {
	t := x.(*Ticket)
	t.index = len(*d)
	*d = append(*d, t)
}
func (d *deadlines) Pop() any {
	old := *d
	t := old[len(old)-1]
	old[len(old)-1] = nil
	t.index = -1
	*d = old[:len(old)-1]
	return t
}

// event is a descriptor the poller found readable, with the generation it
// was added under.
type event struct {
	fd  int32
	gen uint32
}
