package suggest

import (
	"bufio"
	"bytes"
	"container/heap"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/mxguard/mxguard/internal/control"
	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/stats"
)

// Logs are read into the same day records the server keeps (stats.Day),
// by replaying what the lines tell through a stats.Recorder: sessions
// opening and closing, connections, refusals, messages, and a sample of
// the sessions open at every second. A session's start is known only
// when its end is read (mxguard's "disconnect from" line gives its
// duration; a sendmail process's lines are known to be its last only
// when it falls silent), so events wait in a buffer ordered by time until
// no earlier one can come: replayHorizon after them.
const (
	// replayHorizon is how long an event waits for earlier ones: longer
	// than mxguard's max_session_time default (1h) and sendmail's
	// sendmailGap.
	replayHorizon = 65 * time.Minute
	// maxPending bounds the events waiting (about 64 bytes each): past
	// it, the oldest are replayed at once, and a session that started
	// before them counts from then (LogReport.Late).
	maxPending = 1 << 20
	// maxLine is the longest line read; longer ones are skipped.
	maxLine = 64 << 10
	// sendmailGap: a sendmail process silent for this long has ended its
	// session (sendmail logs no line when a connection closes); a line
	// of its PID after that is a new session.
	sendmailGap = 5 * time.Minute
	// logGap: seconds with no line for this long are a gap in the logs
	// (files missing between two), not idle seconds, and are not
	// sampled.
	logGap = 24 * time.Hour
	// maxSession bounds the duration a "disconnect from" line may give
	// (max_session_time is 1h by default), and maxMessages the messages:
	// a line past either is not a session mxguard logged.
	maxSession  = 7 * 24 * time.Hour
	maxMessages = 10000
)

// minTime is the earliest time a log line can be of: the replay counts in
// Unix nanoseconds, which hold only the years 1678 to 2262.
var minTime = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()

// saneTime returns t in nanoseconds if it is in the years a log can be of
// (1970 to 2199).
func saneTime(t time.Time) (int64, bool) {
	if t.Year() < 1970 || t.Year() >= 2200 {
		return 0, false
	}
	return t.UnixNano(), true
}

// LogOptions say how to read logs.
type LogOptions struct {
	// Window is the ClientRate window clients' connections are counted
	// in (connection_rate_window_size).
	Window time.Duration
	// Location is the time zone of syslog time stamps, which carry none
	// (time.Local when nil); Now is when the logs are read, for their
	// year (time.Now when zero): a month after Now's is last year's.
	Location *time.Location
	Now      time.Time
}

// LogReport says what the lines were.
type LogReport struct {
	Lines    int64 // read
	Mxguard  int64 // mxguard's lines
	Sendmail int64 // sendmail's lines
	Skipped  int64 // neither's
	Long     int64 // over maxLine, skipped
	NoTime   int64 // with no time stamp that could be read
	Late     int64 // events replayed later than their time (maxPending)
}

// ReadLogs reads mxguard's log lines (text or JSON, with or without a
// syslog or journald prefix) and sendmail's syslog lines, in any mix, from
// each reader in turn (give rotated files oldest first), and returns the
// days they tell of.
func ReadLogs(rs []io.Reader, opts LogOptions) ([]stats.Day, LogReport, error) {
	if opts.Window <= 0 {
		opts.Window = time.Minute
	}
	if opts.Location == nil {
		opts.Location = time.Local
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	p := &replay{opts: opts, spans: make(map[int]*span)}
	for _, r := range rs {
		if err := p.read(r); err != nil {
			return nil, p.report, err
		}
	}
	p.finish()
	if p.rec == nil {
		return nil, p.report, nil
	}
	return p.rec.Days(), p.report, nil
}

type eventKind uint8

const (
	evConnection eventKind = iota
	evSessionStart
	evSessionEnd
	evRefused
	evMessage
)

type event struct {
	at   int64 // unix nanoseconds
	seq  uint64
	kind eventKind
	why  reason.Reason
	addr netip.Addr
	host string
}

type eventHeap []event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(event)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// span is one sendmail process's session, as far as its lines tell.
type span struct {
	addr netip.Addr
	host string
	last int64 // the time of its latest line
}

type replay struct {
	opts   LogOptions
	report LogReport
	rec    *stats.Recorder

	pending  eventHeap
	seq      uint64
	latest   int64 // the latest time of a line
	lastTime int64 // of the latest event replayed

	open       int64 // sessions open, as replayed
	accepted   int64 // connections, as replayed
	nextSample int64 // the next second to sample; 0: none yet

	spans     map[int]*span // sendmail's, by PID
	lastSweep int64

	names map[netip.Addr]string // mxguard's clients' names, as hostIn found them
}

func (p *replay) read(r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, long, err := readLine(br)
		if line != nil || long {
			p.report.Lines++
			if long {
				p.report.Long++
			} else {
				p.line(strings.TrimRight(string(line), "\r"))
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// readLine returns the next line without its newline; one longer than
// maxLine is read to its end but not kept (long), so that a file without
// newlines costs bounded memory.
func readLine(br *bufio.Reader) (line []byte, long bool, err error) {
	for {
		chunk, err := br.ReadSlice('\n')
		chunk = bytes.TrimSuffix(chunk, []byte{'\n'})
		if !long {
			if len(line)+len(chunk) > maxLine {
				line, long = nil, true
			} else {
				line = append(line, chunk...)
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err != nil && line == nil && !long:
			return nil, false, err
		}
		if line == nil && !long {
			line = []byte{} // an empty line is a line
		}
		return line, long, err
	}
}

func (p *replay) line(s string) {
	if l, ok := control.SplitSyslog(s); ok && control.IsSendmail(l.Ident) {
		if p.sendmail(l) {
			p.report.Sendmail++
			return
		}
		p.report.Skipped++
		return
	}
	if p.mxguard(s) {
		p.report.Mxguard++
		return
	}
	p.report.Skipped++
}

// The readers of one line report whether it was a line of theirs with a
// time stamp; what it told, if anything, is pushed as events.

// push adds an event, and replays those no earlier one can come before.
func (p *replay) push(e event) {
	p.seq++
	e.seq = p.seq
	heap.Push(&p.pending, e)
	p.drain(p.latest - int64(replayHorizon))
}

// seen notes the time of a line.
func (p *replay) seen(t int64) {
	p.latest = max(p.latest, t)
	if p.latest-p.lastSweep >= int64(time.Minute) {
		p.sweepSpans(p.latest)
		p.lastSweep = p.latest
	}
}

// drain replays the events up to until, and the oldest beyond maxPending.
func (p *replay) drain(until int64) {
	for len(p.pending) > 0 && (p.pending[0].at <= until || len(p.pending) > maxPending) {
		e := heap.Pop(&p.pending).(event)
		if e.at > until {
			p.report.Late++
		}
		p.apply(e)
	}
}

func (p *replay) apply(e event) {
	if p.rec == nil {
		start := time.Unix(0, e.at)
		p.rec = stats.NewRecorder(p.opts.Window, start)
		p.nextSample = start.Truncate(time.Second).Add(time.Second).UnixNano()
	}
	if e.at < p.lastTime {
		e.at = p.lastTime // replayed late: as the recorder would count it
	}
	if e.host == "" && (e.kind == evRefused || e.kind == evMessage) {
		// A line that gives no name, about a client whose session's
		// line, read since (its end comes within the horizon), did.
		e.host = p.names[e.addr]
	}
	p.lastTime = e.at
	p.sampleUntil(e.at)
	at := time.Unix(0, e.at)
	switch e.kind {
	case evConnection:
		p.accepted++
		p.rec.Connection(at, e.addr)
	case evSessionStart:
		p.open++
		p.rec.SessionStart(at, e.addr)
	case evSessionEnd:
		p.open = max(p.open-1, 0)
		p.rec.SessionEnd(at, e.addr)
	case evRefused:
		p.rec.Refused(at, e.why, e.addr, e.host)
	case evMessage:
		p.rec.Message(at, e.addr, e.host)
	}
}

// sampleUntil samples the sessions open at each second up to t, as the
// server does once a second; a gap of logGap or more is skipped. Only the
// first second after the events so far can differ from the one before:
// the rest are sampled together.
func (p *replay) sampleUntil(t int64) {
	if t-p.nextSample > int64(logGap) {
		p.nextSample = time.Unix(0, t).Truncate(time.Second).UnixNano()
	}
	if p.nextSample > t {
		return
	}
	p.rec.Sample(time.Unix(0, p.nextSample), p.open, p.accepted)
	p.nextSample += int64(time.Second)
	if p.nextSample > t {
		return
	}
	last := p.nextSample + (t-p.nextSample)/int64(time.Second)*int64(time.Second)
	p.rec.SampleIdle(time.Unix(0, p.nextSample), time.Unix(0, last), p.open)
	p.nextSample = last + int64(time.Second)
}

func (p *replay) finish() {
	for _, s := range p.spans {
		p.closeSpan(s)
	}
	clear(p.spans)
	p.drain(1<<63 - 1)
	if p.rec != nil {
		p.sampleUntil(p.lastTime)
	}
}

// mxguard reads one of mxguard's lines.
func (p *replay) mxguard(s string) bool {
	fields, err := control.MxguardFields(s)
	if err != nil {
		return false
	}
	var msg, ip, why, tm, dur, msgs string
	for _, f := range fields {
		switch f.Key {
		case "msg":
			msg = f.Value
		case "ip":
			ip = f.Value
		case "reason":
			why = f.Value
		case "time":
			tm = f.Value
		case "duration":
			dur = f.Value
		case "messages":
			msgs = f.Value
		}
	}
	at, ok := p.mxguardTime(tm, s)
	if !ok {
		p.report.NoTime++
		return false
	}
	p.seen(at)
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return true // not about a client: start, reload, delivery...
	}
	a = a.Unmap()
	host := p.hostIn(msg, a)
	if strings.HasPrefix(msg, "disconnect from ") {
		d, ok := parseDuration(dur)
		n, err := strconv.ParseInt(msgs, 10, 64)
		if !ok || err != nil || n < 0 || d > maxSession || n > maxMessages || at-int64(d) < minTime {
			return true
		}
		start := at - int64(d)
		p.push(event{at: start, kind: evConnection, addr: a})
		p.push(event{at: start, kind: evSessionStart, addr: a, host: host})
		for range n {
			p.push(event{at: at, kind: evMessage, addr: a, host: host})
		}
		p.push(event{at: at, kind: evSessionEnd, addr: a})
		return true
	}
	r, ok := reasons[reason.Reason(why)]
	if !ok || r.Reason == reason.Throttle {
		return true // an accepted message, a stall: no refusal
	}
	// A refusal at connect or at the greeting ends the connection before
	// any "disconnect from" line: it is the connection's only line. A
	// deferral (terminate = false) is not: its session goes on.
	if (r.Stage == reason.StageConnect || r.Stage == reason.StageGreet) && !strings.HasPrefix(msg, "deferring ") {
		p.push(event{at: at, kind: evConnection, addr: a})
	}
	p.push(event{at: at, kind: evRefused, why: r.Reason, addr: a, host: host})
	return true
}

// reasons are the vocabulary, by name.
var reasons = func() map[reason.Reason]reason.Info {
	m := map[reason.Reason]reason.Info{}
	for _, i := range reason.All() {
		m[i.Reason] = i
	}
	return m
}()

// mxguardTime is the time of an mxguard line: its time= field, else the
// syslog prefix's.
func (p *replay) mxguardTime(tm, line string) (int64, bool) {
	if t, err := time.Parse(time.RFC3339Nano, tm); err == nil {
		return saneTime(t)
	}
	if l, ok := control.SplitSyslog(line); ok {
		return p.syslogTime(l.Prefix)
	}
	return 0, false
}

// parseDuration reads a duration as slog writes it: text "1.5s", JSON
// nanoseconds.
func parseDuration(s string) (time.Duration, bool) {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return d, true
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 {
		return time.Duration(n), true
	}
	return 0, false
}

// namedBy are the messages that start with the client as mxguard writes
// it, "host [ip]", before any text the client sent: the only places a
// name is taken from. Elsewhere (a refused recipient's line, with the
// client's own words on either side of "host [ip]") the client's name is
// the one these gave for its address (replay.names).
var namedBy = []string{"disconnect from ", "rejecting connection from ", "rejecting commands from "}

// maxNames bounds replay.names; past it the map starts again.
const maxNames = 1 << 17

// hostIn is the client's host name: from the message when it starts with
// it, remembered for the client's other lines; "" when unknown.
func (p *replay) hostIn(msg string, a netip.Addr) string {
	for _, prefix := range namedBy {
		rest, ok := strings.CutPrefix(msg, prefix)
		if !ok {
			continue
		}
		host, after, ok := strings.Cut(rest, " ")
		if !ok || !strings.HasPrefix(after, "["+a.String()+"]") || host == "unknown" {
			return ""
		}
		host = strings.ToLower(host)
		if p.names == nil || len(p.names) >= maxNames {
			p.names = make(map[netip.Addr]string)
		}
		p.names[a] = host
		return host
	}
	return ""
}

// syslogTime reads the time stamp a syslog prefix starts with: RFC 3339
// ("2026-03-29T21:14:07.123+02:00", rsyslog's high precision form), or
// RFC 3164's "Mar 29 21:14:07", which has no year or zone (LogOptions).
func (p *replay) syslogTime(prefix string) (int64, bool) {
	f := strings.Fields(prefix)
	if len(f) == 0 {
		return 0, false
	}
	if t, err := time.Parse(time.RFC3339Nano, f[0]); err == nil {
		return saneTime(t)
	}
	if len(f) < 3 {
		return 0, false
	}
	t, err := time.ParseInLocation("Jan 2 15:04:05", f[0]+" "+f[1]+" "+f[2], p.opts.Location)
	if err != nil {
		return 0, false
	}
	now := p.opts.Now.In(p.opts.Location)
	year := now.Year()
	if t.Month() > now.Month() {
		year-- // December's lines read in January
	}
	return saneTime(t.AddDate(year, 0, 0))
}

// Parts of sendmail's lines that ParseSendmail leaves to its caller.
var (
	reNrcpts      = regexp.MustCompile(`, nrcpts=([0-9]+),`)
	reUserUnknown = regexp.MustCompile(`^(?:[0-9A-Za-z]{6,24}: )?<[^>]*>\.\.\. User unknown$`)
)

// sendmail reads one of sendmail's lines.
func (p *replay) sendmail(l control.SyslogLine) bool {
	at, ok := p.syslogTime(l.Prefix)
	if !ok {
		p.report.NoTime++
		return false
	}
	p.seen(at)
	t, ok, err := control.ParseSendmail(l.Msg)
	if !ok || err != nil {
		// No client named here, but the process's session may go on:
		// its "User unknown" lines name none.
		s := p.spans[l.PID]
		if s == nil || at-s.last > int64(sendmailGap) {
			return true // the daemon's own lines, a queue run's
		}
		s.last = at
		if reUserUnknown.MatchString(l.Msg) {
			p.push(event{at: at, kind: evRefused, why: reason.UnknownUser, addr: s.addr, host: s.host})
		}
		return true
	}
	a := t.Prefix.Addr()
	s := p.touch(l.PID, at, a, t.Host)
	host := t.Host
	if host == "" {
		host = s.host
	}
	msg := strings.TrimLeft(l.Msg[strings.IndexByte(l.Msg, ':')+1:], " ")
	switch {
	case strings.HasPrefix(l.Msg, "from=") || strings.HasPrefix(msg, "from="):
		// Several nrcpts= can only come from client text: any but 0
		// counts as a delivery, which keeps the client's network out of
		// hosts.deny (the safe way to be wrong).
		for _, m := range reNrcpts.FindAllStringSubmatch(l.Msg, -1) {
			if m[1] != "0" {
				p.push(event{at: at, kind: evMessage, addr: a, host: host})
				break
			}
		}
	default:
		if why, ok := sendmailRefusal(t.Reason); ok {
			p.push(event{at: at, kind: evRefused, why: why, addr: a, host: host})
		}
	}
	return true
}

// sendmailRefusal maps what a sendmail line says (ParseSendmail's Reason)
// to the refusal mxguard would log for it; ok is false when the line is
// no refusal.
func sendmailRefusal(what string) (reason.Reason, bool) {
	switch what {
	case "pre-greeting traffic":
		return reason.Pregreet, true
	case "tcpwrappers rejection":
		return reason.TCPWrappers, true
	case "possible SMTP attack":
		return reason.TooManyErrors, true
	case "probable open proxy":
		return reason.NonSMTP, true
	}
	ruleset, rest, ok := strings.Cut(what, ", ")
	if !ok || !strings.HasPrefix(ruleset, "ruleset=") || !strings.HasPrefix(rest, "reject=") {
		return "", false // a discard, a quarantine, or no ruleset line
	}
	switch {
	case strings.Contains(rest, "Connection rate limit exceeded"):
		return reason.RateControl, true
	case strings.Contains(rest, "Too many open connections"):
		return reason.ConnControl, true
	case strings.Contains(rest, "Relaying denied"):
		return reason.RelayDenied, true
	case strings.Contains(rest, "User unknown"):
		return reason.UnknownUser, true
	case strings.Contains(rest, "blocked using") || strings.Contains(rest, "listed at") || strings.Contains(rest, "Rejected: "):
		if ruleset == "ruleset=check_rcpt" {
			return reason.DNSBLRcpt, true
		}
		return reason.DNSBL, true
	}
	return reason.Access, true
}

// touch notes a line of sendmail process pid naming client a: the line
// continues the process's session, or ends it and starts another.
func (p *replay) touch(pid int, at int64, a netip.Addr, host string) *span {
	s := p.spans[pid]
	if s != nil && (at-s.last > int64(sendmailGap) || s.addr != a) {
		p.closeSpan(s)
		s = nil
	}
	if s == nil {
		s = &span{addr: a, host: host, last: at}
		p.spans[pid] = s
		p.push(event{at: at, kind: evConnection, addr: a})
		p.push(event{at: at, kind: evSessionStart, addr: a, host: host})
	}
	s.last = max(s.last, at)
	if s.host == "" {
		s.host = host
	}
	return s
}

// closeSpan ends a sendmail process's session one second after its last
// line: syslog's time stamps are whole seconds, and a process seen in a
// second lived in it.
func (p *replay) closeSpan(s *span) {
	p.push(event{at: s.last + int64(time.Second), kind: evSessionEnd, addr: s.addr})
}

// sweepSpans ends the sessions of processes silent for sendmailGap.
func (p *replay) sweepSpans(now int64) {
	for pid, s := range p.spans {
		if now-s.last > int64(sendmailGap) {
			p.closeSpan(s)
			delete(p.spans, pid)
		}
	}
}

// String is the report as a line for the operator.
func (r LogReport) String() string {
	s := fmt.Sprintf("%d lines: %d of mxguard's, %d of sendmail's; %d of neither, skipped", r.Lines, r.Mxguard, r.Sendmail, r.Skipped)
	if r.Long > 0 {
		s += fmt.Sprintf(", %d over %d bytes", r.Long, maxLine)
	}
	if r.NoTime > 0 {
		s += fmt.Sprintf(", %d without a time stamp", r.NoTime)
	}
	if r.Late > 0 {
		s += fmt.Sprintf("; %d events counted late (more than %d waiting)", r.Late, maxPending)
	}
	return s
}
