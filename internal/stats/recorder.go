package stats

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mxguard/mxguard/internal/reason"
)

// Bounds of what a Recorder holds.
const (
	// KeepDays is how many days are kept, today included: two weeks and
	// today, so that a "standard day" can be told from an attack.
	KeepDays = 15
	// MaxClients is how many clients the hour's table follows (their
	// connections in the window, their sessions open, whether they
	// delivered mail), about 300 bytes each. When it is full, clients
	// that delivered nothing and have no session open are dropped; if
	// that frees too little, new clients go uncounted for a while
	// (Day.UntrackedClients).
	MaxClients = 8192
	// maxTimes bounds the connection times kept for one client: its
	// count in a window stops at this (a client that delivered mail and
	// opens more connections a window than this is counted as this).
	maxTimes = 64
)

// Recorder builds the Day records from what happens, with the time of
// each event given by the caller: the server gives the clock's, a log
// reader the lines'. A time earlier than one already given counts as that
// one. It is safe for concurrent use; a nil *Recorder records nothing.
type Recorder struct {
	mu     sync.Mutex
	window time.Duration

	done   []Day     // finished days, oldest first
	day    *dayState // today; nil before the first event
	dayNum int64     // today as days since 1970 (UTC): what advance compares
	last   time.Time // the latest time given

	hour      int64 // the hour (unix time / 3600) the client table is for
	hourStart time.Time
	clients   map[netip.Addr]*client
	pause     int // new clients to leave out before the next sweep

	lastSample   time.Time
	lastAccepted int64
}

type dayState struct {
	d    Day // the histograms and counts; Networks and Suffixes come from:
	nets sources[netip.Prefix]
	sufs sources[string]
}

type client struct {
	open, peakOpen int32
	peakRate       int32
	delivered      bool
	times          []uint32  // connection times in the window, ms from hourStart
	first          [4]uint32 // times' first array: most clients need no other
}

// NewRecorder returns a Recorder that counts clients' connections in
// window, starting at start: the accepted count Sample is given next is
// counted from 0 then.
func NewRecorder(window time.Duration, start time.Time) *Recorder {
	return &Recorder{window: window, lastSample: start, last: start, clients: make(map[netip.Addr]*client)}
}

// SetWindow changes the ClientRate window clients' connections are
// counted in (a reload).
func (r *Recorder) SetWindow(w time.Duration) {
	if r == nil || w <= 0 {
		return
	}
	r.mu.Lock()
	r.window = w
	r.mu.Unlock()
}

// advance moves the recorder to now (or keeps it at the latest time
// given), closing the hour and the day when now is in later ones, and
// returns the time to count at. r.mu must be held.
func (r *Recorder) advance(now time.Time) time.Time {
	if now.Before(r.last) {
		now = r.last
	}
	r.last = now
	h := floorDiv(now.Unix(), 3600)
	if r.day != nil && h != r.hour {
		r.foldClients(&r.day.d)
		r.resetClients()
	}
	if r.day == nil || h != r.hour {
		r.hour, r.hourStart = h, time.Unix(h*3600, 0)
	}
	// The day's number, not its date's text: advance runs at every
	// event, and formatting a date allocates.
	switch n := floorDiv(now.Unix(), 86400); {
	case r.day == nil:
		r.day, r.dayNum = r.takeDay(DateOf(now)), n
	case n != r.dayNum:
		r.done = append(r.done, r.day.snapshot())
		r.trim()
		r.day, r.dayNum = r.takeDay(DateOf(now)), n
	}
	return now
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}

// takeDay starts the day date: anew, or from the record of it that
// Restore put among the finished days (a restart the same day).
func (r *Recorder) takeDay(date string) *dayState {
	ds := &dayState{d: Day{Date: date, Window: int64(r.window / time.Second)}}
	if i := slices.IndexFunc(r.done, func(d Day) bool { return d.Date == date }); i >= 0 {
		ds.merge(r.done[i])
		r.done = slices.Delete(r.done, i, i+1)
	}
	return ds
}

// trim sorts the finished days and drops the oldest beyond KeepDays.
func (r *Recorder) trim() {
	// YYYY-MM-DD sorts as text.
	slices.SortFunc(r.done, func(a, b Day) int { return strings.Compare(a.Date, b.Date) })
	if extra := len(r.done) - (KeepDays - 1); extra > 0 {
		r.done = slices.Delete(r.done, 0, extra)
	}
}

// foldClients adds the hour's figures of the clients that delivered mail
// to d. r.mu must be held.
func (r *Recorder) foldClients(d *Day) {
	for _, c := range r.clients {
		if c.delivered {
			d.ClientRate.Add(int64(c.peakRate))
			d.ClientConn.Add(int64(c.peakOpen))
		}
	}
	d.Window = int64(r.window / time.Second)
}

// resetClients starts the client table of a new hour: only the clients
// with sessions open stay, with those as their count so far.
func (r *Recorder) resetClients() {
	for a, c := range r.clients {
		if c.open <= 0 {
			delete(r.clients, a)
			continue
		}
		times := c.times[:0]
		*c = client{open: c.open, peakOpen: c.open, times: times}
	}
	r.pause = 0
}

// client returns the table's entry for a, making one if there is room.
// r.mu must be held.
func (r *Recorder) client(a netip.Addr) *client {
	if c := r.clients[a]; c != nil {
		return c
	}
	if len(r.clients) >= MaxClients {
		if r.pause > 0 {
			r.pause--
			r.day.d.UntrackedClients++
			return nil
		}
		for k, c := range r.clients {
			if !c.delivered && c.open <= 0 {
				delete(r.clients, k)
			}
		}
		if len(r.clients) > MaxClients-MaxClients/8 {
			// The sweep freed too little: a sweep a new client would
			// cost as much as the table; wait before the next one.
			r.pause = MaxClients / 8
			r.day.d.UntrackedClients++
			return nil
		}
	}
	c := &client{}
	c.times = c.first[:0]
	r.clients[a] = c
	return c
}

// Sample records the load at now: sessions open, and accepted, the count
// of connections accepted so far (a counter: the difference from the
// previous sample is the connections of the seconds between them).
func (r *Recorder) Sample(now time.Time, sessions, accepted int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now = r.advance(now)
	d := &r.day.d
	d.Concurrency.Add(sessions)
	delta := accepted - r.lastAccepted
	if delta < 0 { // a counter that started again
		delta = accepted
	}
	r.lastAccepted = accepted
	d.Accepted += delta
	secs := int64(now.Sub(r.lastSample).Round(time.Second) / time.Second)
	r.lastSample = now
	switch {
	case secs <= 1:
		d.AcceptRate.Add(delta)
	case secs <= 60:
		// Samples missed (a loaded machine): the connections spread
		// over the seconds they came in.
		each, rest := delta/secs, delta%secs
		d.AcceptRate.AddN(each+1, rest)
		d.AcceptRate.AddN(each, secs-rest)
	}
	// Longer (the machine was suspended): no rate can be told.
}

// SampleIdle records the samples of the seconds from from to to (whole
// seconds apart, both included) in which nothing changed since the last
// Sample: sessions open all along, no connection accepted. A log reader
// gives an hour without a line in one call instead of 3,600.
func (r *Recorder) SampleIdle(from, to time.Time, sessions int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for t := from; !t.After(to); {
		t = r.advance(t)
		y, m, d := t.UTC().Date()
		end := time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC).Add(-time.Nanosecond) // the day's last moment
		if end.After(to) {
			end = to
		}
		n := int64(end.Sub(t)/time.Second) + 1
		r.day.d.Concurrency.AddN(sessions, n)
		r.day.d.AcceptRate.AddN(0, n)
		r.advance(end)
		t = t.Add(time.Duration(n) * time.Second)
	}
	r.lastSample = r.last
}

// Connection records a connection from client a, for its count in the
// ClientRate window.
func (r *Recorder) Connection(now time.Time, a netip.Addr) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now = r.advance(now)
	c := r.client(a)
	if c == nil {
		return
	}
	at := uint32(now.Sub(r.hourStart) / time.Millisecond)
	w := r.window.Milliseconds()
	i := 0
	for i < len(c.times) && int64(at)-int64(c.times[i]) >= w {
		i++
	}
	if len(c.times)-i >= maxTimes {
		i++
	}
	// Moved down rather than resliced, so that the array is reused.
	c.times = c.times[:copy(c.times, c.times[i:])]
	c.times = append(c.times, at)
	c.peakRate = max(c.peakRate, int32(len(c.times)))
}

// SessionStart records a session from client a opening.
func (r *Recorder) SessionStart(now time.Time, a netip.Addr) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.advance(now)
	r.day.d.Sessions++
	if c := r.client(a); c != nil {
		c.open++
		c.peakOpen = max(c.peakOpen, c.open)
	}
}

// SessionEnd records a session from client a closing.
func (r *Recorder) SessionEnd(now time.Time, a netip.Addr) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.advance(now)
	if c := r.clients[a]; c != nil && c.open > 0 {
		c.open--
	}
}

// Refused records a refusal for why of client a, whose confirmed host
// name is host ("" when it has none).
func (r *Recorder) Refused(now time.Time, why reason.Reason, a netip.Addr, host string) {
	if r == nil {
		return
	}
	blamed := Blamed(why) && a.IsValid()
	var net netip.Prefix
	var suffix string
	if blamed { // outside the lock, which every session's events take
		net, suffix = Network(a), Suffix(host)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.advance(now)
	d := r.day
	if d.d.Refused == nil {
		d.d.Refused = make(map[reason.Reason]int64)
	}
	d.d.Refused[why]++
	if !blamed {
		return
	}
	d.nets.refuse(net, why, 1)
	if suffix != "" {
		d.sufs.refuse(suffix, why, 1)
	}
}

// Message records a message accepted from client a, whose confirmed host
// name is host.
func (r *Recorder) Message(now time.Time, a netip.Addr, host string) {
	if r == nil {
		return
	}
	suffix := Suffix(host)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.advance(now)
	r.day.d.Messages++
	if !a.IsValid() {
		return
	}
	if c := r.client(a); c != nil {
		c.delivered = true
	}
	r.day.nets.deliver(Network(a), 1)
	if suffix != "" {
		r.day.sufs.deliver(suffix, 1)
	}
}

// Days returns the records kept, oldest first, today's as it stands
// (with the clients of the hour so far).
func (r *Recorder) Days() []Day {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Day, 0, len(r.done)+1)
	for _, d := range r.done {
		var c Day
		c.Merge(d)
		c.Date, c.Window = d.Date, d.Window
		out = append(out, c)
	}
	if r.day != nil {
		today := r.day.snapshot()
		r.foldClients(&today)
		out = append(out, today)
		// Today is the latest day unless the clock went back.
		slices.SortStableFunc(out, func(a, b Day) int { return strings.Compare(a.Date, b.Date) })
	}
	return out
}

// Restore adds days read from the file (Load) to what the recorder holds:
// after a restart the same day, today's figures go on from the file's.
// Days older than KeepDays are dropped.
func (r *Recorder) Restore(days []Day) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	byDate := make(map[string]int, len(r.done))
	for i, d := range r.done {
		byDate[d.Date] = i
	}
	for _, d := range days {
		switch i, ok := byDate[d.Date]; {
		case r.day != nil && d.Date == r.day.d.Date:
			r.day.merge(d)
		case ok:
			r.done[i].Merge(d)
		default:
			byDate[d.Date] = len(r.done)
			r.done = append(r.done, d)
		}
	}
	r.trim()
}

// snapshot is the day as a record, sharing nothing with the state.
func (ds *dayState) snapshot() Day {
	d := ds.d
	d.Concurrency = ds.d.Concurrency.Clone()
	d.AcceptRate = ds.d.AcceptRate.Clone()
	d.ClientRate = ds.d.ClientRate.Clone()
	d.ClientConn = ds.d.ClientConn.Clone()
	d.Refused = copyReasons(ds.d.Refused)
	d.Networks = ds.nets.list(func(p netip.Prefix) string { return p.String() })
	d.Suffixes = ds.sufs.list(func(s string) string { return s })
	d.UntrackedDeliveries += ds.nets.untracked + ds.sufs.untracked
	return d
}

// merge adds a record of the same day to the state.
func (ds *dayState) merge(o Day) {
	sources := o
	sources.Networks, sources.Suffixes = nil, nil
	ds.d.Merge(sources)
	for _, s := range o.Networks {
		p, err := netip.ParsePrefix(s.Key)
		if err != nil {
			continue // checked by Load; a record made here is never wrong
		}
		addSource(&ds.nets, p, s)
	}
	for _, s := range o.Suffixes {
		addSource(&ds.sufs, s.Key, s)
	}
}

func addSource[K comparable](t *sources[K], key K, s Source) {
	for why, n := range s.Refused {
		t.refuse(key, why, n)
	}
	if s.Delivered > 0 {
		t.deliver(key, s.Delivered)
	}
}
