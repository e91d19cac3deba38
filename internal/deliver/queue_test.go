package deliver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/smtpsink"
	"github.com/mxguard/mxguard/internal/spool"
)

// logRecorder is a slog.Handler that keeps every record, so that tests can
// wait for the queue's log lines instead of sleeping.
type logRecorder struct {
	t *testing.T

	mu      sync.Mutex
	records []logRecord
	changed chan struct{} // closed and replaced on every record
}

type logRecord struct {
	msg   string
	attrs map[string]string
}

func newLogRecorder(t *testing.T) *logRecorder {
	return &logRecorder{t: t, changed: make(chan struct{})}
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{msg: r.Message, attrs: make(map[string]string)}
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		fmt.Fprintf(&b, " %s=%q", a.Key, a.Value.String())
		return true
	})
	h.t.Log(b.String())
	h.mu.Lock()
	h.records = append(h.records, rec)
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
	return nil
}

// count returns how many records match msg and the attribute values in kv
// (key, value, key, value...).
func (h *logRecorder) count(msg string, kv ...string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		if r.matches(msg, kv) {
			n++
		}
	}
	return n
}

func (r logRecord) matches(msg string, kv []string) bool {
	if r.msg != msg {
		return false
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if r.attrs[kv[i]] != kv[i+1] {
			return false
		}
	}
	return true
}

// wait blocks until n records match, failing the test after 10 seconds.
func (h *logRecorder) wait(n int, msg string, kv ...string) {
	h.t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		h.mu.Lock()
		changed := h.changed
		h.mu.Unlock()
		if h.count(msg, kv...) >= n {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			h.t.Fatalf("timed out waiting for %d log lines %q %q", n, msg, kv)
		}
	}
}

func openSpool(t *testing.T, dir string) *spool.Spool {
	t.Helper()
	sp, err := spool.Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	return sp
}

func submit(t *testing.T, sp *spool.Spool, from string, rcpts ...string) string {
	t.Helper()
	return submitBody(t, sp, testBody, from, rcpts...)
}

func submitBody(t *testing.T, sp *spool.Spool, body, from string, rcpts ...string) string {
	t.Helper()
	env := &spool.Envelope{From: from, ClientIP: "127.0.0.1", Helo: "client.test"}
	for _, r := range rcpts {
		env.Rcpts = append(env.Rcpts, spool.Rcpt{Addr: r})
	}
	w, err := sp.Create(env)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if _, err := w.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	id, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// runQueue runs q until the test ends, or until the returned stop is
// called; stop returns when Run has.
func runQueue(t *testing.T, q *Queue) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func testQueueConfig() QueueConfig {
	return QueueConfig{Hostname: "mx.test", MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Workers: 2}
}

func queued(t *testing.T, sp *spool.Spool) []string {
	t.Helper()
	ids, err := sp.Queued()
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// maildirMessages returns the files in new/ and cur/ of a mailbox.
func maildirMessages(t *testing.T, root, box string) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(root, box, sub))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			out = append(out, filepath.Join(root, box, sub, e.Name()))
		}
	}
	return out
}

// senderDSN returns the only message in the sender's mailbox box: the
// DSN a bounce left there.
func senderDSN(t *testing.T, root, box string) []byte {
	t.Helper()
	dsns := maildirMessages(t, root, box)
	if len(dsns) != 1 {
		t.Fatalf("sender's maildir holds %q, want one DSN", dsns)
	}
	raw, err := os.ReadFile(dsns[0])
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

type queueEnv struct {
	sp    *spool.Spool
	root  string // Maildir root
	log   *logRecorder
	queue *Queue
}

func newMaildirQueue(t *testing.T, cfg QueueConfig) *queueEnv {
	t.Helper()
	dir := t.TempDir()
	e := &queueEnv{sp: openSpool(t, filepath.Join(dir, "spool")), root: filepath.Join(dir, "mail"), log: newLogRecorder(t)}
	logger := slog.New(e.log)
	e.queue = NewQueue(e.sp, NewMaildir(e.root, "mx.test", []string{"localhost", "example.org"}, logger), cfg, logger)
	return e
}

func TestQueueMaildir(t *testing.T) {
	e := newMaildirQueue(t, testQueueConfig())
	before := submit(t, e.sp, "alice@example.net", "bob@localhost")
	runQueue(t, e.queue)
	after := submit(t, e.sp, "alice@example.net", "carol@example.org", "dave@localhost")
	e.queue.Enqueue(after)
	e.log.wait(1, "message finished, removed from spool", "id", before)
	e.log.wait(1, "message finished, removed from spool", "id", after)
	e.log.wait(3, "delivered", "via", "maildir") // logged after the removal
	for _, box := range []string{"localhost/bob", "example.org/carol", "localhost/dave"} {
		if m := maildirMessages(t, e.root, box); len(m) != 1 {
			t.Errorf("%s holds %q, want one message", box, m)
		}
	}
	if n := e.log.count("delivered", "via", "maildir"); n != 3 {
		t.Errorf("%d delivered log lines, want 3", n)
	}
	if ids := queued(t, e.sp); len(ids) != 0 {
		t.Errorf("spool still holds %q", ids)
	}
}

// TestQueueDamagedMessage: a queued message that no longer reads back is
// moved aside once, not retried for ever, and the rest of the queue flows.
// A small message is damaged in the spool's log, a large one in its file.
func TestQueueDamagedMessage(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		damage  func(t *testing.T, spoolDir, id string)
		corrupt string // what corrupt/ then holds, %s for the ID
	}{
		{"in the log", testBody, func(t *testing.T, spoolDir, id string) {
			segs, _ := filepath.Glob(filepath.Join(spoolDir, "log", "*.seg"))
			for _, seg := range segs {
				data, err := os.ReadFile(seg)
				if err != nil {
					t.Fatal(err)
				}
				if i := bytes.Index(data, []byte(`"id":"`+id)); i >= 0 {
					data[i+1] ^= 0x20 // in the envelope: its checksum no longer matches
					if err := os.WriteFile(seg, data, 0o600); err != nil {
						t.Fatal(err)
					}
					return
				}
			}
			t.Fatalf("no segment of %v holds %s", segs, id)
		}, "%s.rec"},
		{"in a file", strings.Repeat("x", 100<<10) + "\r\n", func(t *testing.T, spoolDir, id string) {
			if err := os.Truncate(filepath.Join(spoolDir, "queue", id), 5); err != nil {
				t.Fatal(err)
			}
		}, "%s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			spoolDir := filepath.Join(dir, "spool")
			e := &queueEnv{sp: openSpool(t, spoolDir), root: filepath.Join(dir, "mail"), log: newLogRecorder(t)}
			logger := slog.New(e.log)
			e.queue = NewQueue(e.sp, NewMaildir(e.root, "mx.test", []string{"localhost"}, logger), testQueueConfig(), logger)
			bad := submitBody(t, e.sp, tt.body, "alice@example.net", "bob@localhost")
			tt.damage(t, spoolDir, bad)
			good := submit(t, e.sp, "alice@example.net", "carol@localhost")
			runQueue(t, e.queue)
			e.log.wait(1, "damaged message moved to the spool's corrupt/ directory", "id", bad)
			e.log.wait(1, "message finished, removed from spool", "id", good)
			if _, err := os.Stat(filepath.Join(spoolDir, "corrupt", fmt.Sprintf(tt.corrupt, bad))); err != nil {
				t.Errorf("damaged message not kept in corrupt/: %v", err)
			}
			if ids := queued(t, e.sp); len(ids) != 0 {
				t.Errorf("spool still holds %q", ids)
			}
		})
	}
}

// TestQueueBounceToMaildir fails one recipient permanently and expects a
// DSN in the (local) sender's Maildir, and nothing for the one delivered.
func TestQueueBounceToMaildir(t *testing.T) {
	e := newMaildirQueue(t, testQueueConfig())
	runQueue(t, e.queue)
	id := submit(t, e.sp, "alice@localhost", "bob@localhost", "../evil@localhost")
	e.queue.Enqueue(id)
	// The message and its DSN.
	e.log.wait(2, "message finished, removed from spool")
	if n := e.log.count("bounced", "id", id, "rcpt", "../evil@localhost"); n != 1 {
		t.Errorf("%d bounced lines for the unsafe recipient", n)
	}
	raw := senderDSN(t, e.root, "localhost/alice")
	if !strings.HasPrefix(string(raw), "Return-Path: <>\n") {
		t.Errorf("DSN not from the null sender: %.60q", raw)
	}
	p := parseDSN(t, raw)
	if len(p.perRcpt) != 1 {
		t.Fatalf("%d recipients in the DSN, want 1", len(p.perRcpt))
	}
	r := p.perRcpt[0]
	for k, want := range map[string]string{
		"Final-Recipient": "rfc822; ../evil@localhost",
		"Action":          "failed",
		"Status":          "5.1.3",
		"Diagnostic-Code": "smtp; 550 5.1.3 <../evil@localhost>: unsafe mailbox name",
	} {
		if got := r.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if got := p.perMsg.Get("Reporting-Mta"); got != "dns; mx.test" {
		t.Errorf("Reporting-MTA: %q", got)
	}
	if !strings.Contains(p.returned, "Subject: test") {
		t.Errorf("original headers missing: %q", p.returned)
	}
	if ids := queued(t, e.sp); len(ids) != 0 {
		t.Errorf("spool still holds %q", ids)
	}
}

// TestQueueNullSender: a failed message from the null sender is dropped
// with a log line, never bounced.
func TestQueueNullSender(t *testing.T) {
	e := newMaildirQueue(t, testQueueConfig())
	id := submit(t, e.sp, "", "nobody@elsewhere.net")
	runQueue(t, e.queue)
	e.log.wait(1, "message finished, removed from spool", "id", id)
	if n := e.log.count("bounce dropped: null sender", "id", id); n != 1 {
		t.Errorf("%d 'bounce dropped' lines, want 1", n)
	}
	if n := e.log.count("bounce queued"); n != 0 {
		t.Errorf("a bounce was queued for a null-sender message")
	}
}

// breakMailbox makes deliveries to box fail temporarily: its directory is a
// plain file.
func breakMailbox(t *testing.T, root, box string) {
	t.Helper()
	p := filepath.Join(root, box)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestQueueLifetimeExpiry(t *testing.T) {
	cfg := testQueueConfig()
	cfg.QueueLifetime = 300 * time.Millisecond
	e := newMaildirQueue(t, cfg)
	breakMailbox(t, e.root, "localhost/bob")
	start := time.Now()
	id := submit(t, e.sp, "alice@localhost", "bob@localhost")
	runQueue(t, e.queue)
	e.log.wait(1, "message finished, removed from spool", "id", id)
	e.log.wait(1, "delivered", "rcpt", "alice@localhost")
	if el := time.Since(start); el < cfg.QueueLifetime {
		t.Errorf("bounced after %v, before the lifetime of %v", el, cfg.QueueLifetime)
	}
	if n := e.log.count("deferred", "id", id); n < 2 {
		t.Errorf("%d deferred lines, want retries before the bounce", n)
	}
	if n := e.log.count("bounced", "id", id, "reason", "queue_lifetime"); n != 1 {
		t.Errorf("%d expiry bounce lines, want 1", n)
	}
	raw := senderDSN(t, e.root, "localhost/alice")
	p := parseDSN(t, raw)
	if len(p.perRcpt) != 1 {
		t.Fatalf("%d recipients in the DSN", len(p.perRcpt))
	}
	r := p.perRcpt[0]
	if r.Get("Action") != "failed" || r.Get("Status") != "4.3.0" || !strings.HasPrefix(r.Get("Diagnostic-Code"), "smtp; 451 4.3.0 creating maildir") {
		t.Errorf("per-recipient fields %q", r)
	}
}

// TestQueueRestart stops a queue with one recipient left and starts a new
// one on the reopened spool: only that recipient is delivered again.
func TestQueueRestart(t *testing.T) {
	cfg := testQueueConfig()
	cfg.MinBackoff, cfg.MaxBackoff = time.Hour, time.Hour
	dir := t.TempDir()
	root := filepath.Join(dir, "mail")
	spoolDir := filepath.Join(dir, "spool")
	breakMailbox(t, root, "localhost/bob")

	sp1, err := spool.Open(spoolDir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	log1 := newLogRecorder(t)
	q1 := NewQueue(sp1, NewMaildir(root, "mx.test", []string{"localhost"}, slog.New(log1)), cfg, slog.New(log1))
	id := submit(t, sp1, "alice@example.net", "a@localhost", "bob@localhost", "c@localhost")
	stop := runQueue(t, q1)
	log1.wait(1, "deferred", "id", id, "rcpt", "bob@localhost")
	stop()
	if err := sp1.Close(); err != nil {
		t.Fatal(err)
	}

	// Mend the mailbox and restart on the same spool.
	if err := os.Remove(filepath.Join(root, "localhost/bob")); err != nil {
		t.Fatal(err)
	}
	sp2 := openSpool(t, spoolDir)
	env, err := sp2.Envelope(id)
	if err != nil {
		t.Fatal(err)
	}
	if !env.Rcpts[0].Done || env.Rcpts[1].Done || !env.Rcpts[2].Done || env.Attempts != 1 || !env.NextTry.After(time.Now()) {
		t.Fatalf("saved state %+v, want a and c done, bob pending until later", env)
	}
	// The saved NextTry is an hour away; bring it forward as an operator's
	// "flush" would.
	env.NextTry = time.Time{}
	if err := sp2.Update(env); err != nil {
		t.Fatal(err)
	}
	log2 := newLogRecorder(t)
	q2 := NewQueue(sp2, NewMaildir(root, "mx.test", []string{"localhost"}, slog.New(log2)), cfg, slog.New(log2))
	runQueue(t, q2)
	log2.wait(1, "message finished, removed from spool", "id", id)
	log2.wait(1, "delivered", "rcpt", "bob@localhost") // logged after the removal
	if n := log2.count("delivered"); n != 1 || log2.count("delivered", "rcpt", "bob@localhost") != 1 {
		t.Errorf("second run: %d deliveries, want only bob's", n)
	}
	if n := log2.count("maildir: message already delivered, not writing it again"); n != 0 {
		t.Errorf("second run offered done recipients again")
	}
	for _, box := range []string{"localhost/a", "localhost/bob", "localhost/c"} {
		if m := maildirMessages(t, root, box); len(m) != 1 {
			t.Errorf("%s holds %q, want one message", box, m)
		}
	}
}

// TestQueueMaildirCrash delivers into Maildir behind the queue's back, as
// an attempt that crashed after the Maildir rename but before the spool
// update would have: the queue must find the message and not write it twice.
func TestQueueMaildirCrash(t *testing.T) {
	e := newMaildirQueue(t, testQueueConfig())
	id := submit(t, e.sp, "alice@example.net", "bob@localhost")
	env, err := e.sp.Envelope(id)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMaildir(e.root, "mx.test", []string{"localhost"}, nil)
	body := func() (rc io.ReadCloser, err error) { return e.sp.Body(id) }
	if r := m.Deliver(context.Background(), env, body, []int{0}, nil); r[0].Status != Delivered {
		t.Fatal(r)
	}
	runQueue(t, e.queue)
	e.log.wait(1, "message finished, removed from spool", "id", id)
	if n := e.log.count("maildir: message already delivered, not writing it again", "id", id); n != 1 {
		t.Errorf("the queue did not notice the earlier delivery")
	}
	if msgs := maildirMessages(t, e.root, "localhost/bob"); len(msgs) != 1 {
		t.Errorf("mailbox holds %q, want one message", msgs)
	}
}

func TestBackoff(t *testing.T) {
	q := NewQueue(nil, nil, QueueConfig{Hostname: "h", MinBackoff: time.Minute, MaxBackoff: 10 * time.Minute}, nil)
	for n, want := range map[int]time.Duration{
		1: time.Minute, 2: 2 * time.Minute, 3: 4 * time.Minute, 4: 8 * time.Minute, 5: 10 * time.Minute, 1000: 10 * time.Minute,
	} {
		if got := q.backoff(n); got != want {
			t.Errorf("backoff(%d) = %v, want %v", n, got, want)
		}
	}
	def := NewQueue(nil, nil, QueueConfig{}, nil).cfg
	if def.QueueLifetime != 5*24*time.Hour || def.MinBackoff != time.Minute || def.Workers != 4 {
		t.Errorf("defaults %+v", def)
	}
}

func newRelayQueue(t *testing.T, url string, cfg QueueConfig) *queueEnv {
	t.Helper()
	e := &queueEnv{sp: openSpool(t, filepath.Join(t.TempDir(), "spool")), log: newLogRecorder(t)}
	logger := slog.New(e.log)
	r, err := NewRelay(url, "mx.test", fastTimeouts, logger)
	if err != nil {
		t.Fatal(err)
	}
	e.queue = NewQueue(e.sp, r, cfg, logger)
	return e
}

// TestQueueRelayRetry covers a soft-rejecting downstream and one that is
// not listening yet: both defer, back off, and deliver once it is fixed.
func TestQueueRelayRetry(t *testing.T) {
	tests := []struct {
		name   string
		before []string // smtp-sink flags before the fix; nil = not running
		reply  string
	}{
		{"4xx", []string{"-r", "RCPT"}, "450 4.3.0 Error: command failed"},
		{"connection refused", nil, "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := smtpsink.FreePort(t)
			var first *smtpsink.Sink
			if tt.before != nil {
				first = startSinkAt(t, addr, false, tt.before...)
			}
			cfg := testQueueConfig()
			cfg.MinBackoff, cfg.MaxBackoff = 50*time.Millisecond, 200*time.Millisecond
			e := newRelayQueue(t, "smtp://"+addr, cfg)
			id := submit(t, e.sp, "alice@example.net", "bob@example.org", "carol@example.org")
			runQueue(t, e.queue)
			e.log.wait(2, "deferred", "id", id, "rcpt", "bob@example.org", "via", "smtp://"+addr)
			e.log.mu.Lock()
			for _, r := range e.log.records {
				if r.msg == "deferred" && !strings.Contains(r.attrs["reply"], tt.reply) {
					t.Errorf("deferred with %q, want %q", r.attrs["reply"], tt.reply)
				}
			}
			e.log.mu.Unlock()
			if first != nil {
				first.Stop()
			}
			fixed := startSinkAt(t, addr, false)
			e.log.wait(1, "message finished, removed from spool", "id", id)
			// The removal comes first, the log lines after it.
			e.log.wait(2, "delivered", "id", id)
			if n := e.log.count("delivered", "id", id); n != 2 {
				t.Errorf("%d delivered lines, want 2", n)
			}
			d := sinkDumps(t, fixed)
			if len(d) != 1 || len(d[0].rcpts) != 2 {
				t.Fatalf("the mended downstream got %+v, want one message for two recipients", d)
			}
			if got := strings.TrimSuffix(d[0].body, "\n"); got != wantBody {
				t.Errorf("body %q", got)
			}
		})
	}
}

// TestQueueRelayBounce: a 5xx from the relay bounces to the sender, and the
// DSN travels through the same relay. smtp-sink rejects that too, which
// drops it: a bounce is never bounced.
func TestQueueRelayBounce(t *testing.T) {
	s := startSink(t, false, "-f", ".")
	e := newRelayQueue(t, "smtp://"+s.Addr, testQueueConfig())
	id := submit(t, e.sp, "alice@example.net", "bob@example.org")
	runQueue(t, e.queue)
	e.log.wait(1, "bounce dropped: null sender")
	if n := e.log.count("bounced", "id", id, "rcpt", "bob@example.org", "reply", "500 5.3.0 Error: command failed"); n != 1 {
		t.Errorf("%d bounced lines for bob", n)
	}
	dumps := sinkDumps(t, s)
	var dsn *sinkDump
	for i, d := range dumps {
		if d.mailArgs == "<>" {
			dsn = &dumps[i]
		}
	}
	if len(dumps) != 2 || dsn == nil || len(dsn.rcpts) != 1 || dsn.rcpts[0] != "<alice@example.net>" {
		t.Fatalf("downstream got %+v, want the message and a DSN to alice", dumps)
	}
	p := parseDSN(t, []byte(dsn.body))
	if len(p.perRcpt) != 1 {
		t.Fatalf("%d recipients in the DSN", len(p.perRcpt))
	}
	r := p.perRcpt[0]
	if r.Get("Final-Recipient") != "rfc822; bob@example.org" || r.Get("Status") != "5.3.0" ||
		r.Get("Diagnostic-Code") != "smtp; 500 5.3.0 Error: command failed" || r.Get("Action") != "failed" {
		t.Errorf("per-recipient fields %q", r)
	}
	e.log.wait(1, "message finished, removed from spool", "id", id)
}

// TestQueueRecordsBeforeQuit: once the downstream's final reply is read,
// the spool records the outcome before the client does anything else, so
// that a crash from then on (here: at QUIT, where the peer looks at the
// spool) does not hand the downstream the same message again. A message
// delivered to all its recipients is gone from the spool; one delivered
// to some has those marked done.
func TestQueueRecordsBeforeQuit(t *testing.T) {
	type atQuit struct {
		env *spool.Envelope
		err error
	}
	run := func(t *testing.T, p *peer, url string, rcpts ...string) (*queueEnv, string, atQuit) {
		seen := make(chan atQuit, 4) // the DSN of a bounce says QUIT too
		var e *queueEnv
		var id string
		ready := make(chan struct{})
		p.onQuit = func() {
			<-ready
			env, err := e.sp.Envelope(id)
			select {
			case seen <- atQuit{env, err}:
			default:
			}
		}
		addr := p.start(t)
		cfg := testQueueConfig()
		cfg.MinBackoff, cfg.MaxBackoff = time.Hour, time.Hour // one attempt is all this test looks at
		e = newRelayQueue(t, url+addr, cfg)
		id = submit(t, e.sp, "alice@example.net", rcpts...)
		close(ready)
		runQueue(t, e.queue)
		select {
		case q := <-seen:
			return e, id, q
		case <-time.After(10 * time.Second):
			t.Fatal("no QUIT reached the downstream")
		}
		panic("unreachable")
	}

	t.Run("delivered", func(t *testing.T) {
		e, id, q := run(t, &peer{ext: []string{"PIPELINING"}}, "smtp://", "bob@example.org", "carol@example.org")
		if !errors.Is(q.err, spool.ErrNotFound) {
			t.Errorf("at QUIT the spool still holds the delivered message: %+v, %v", q.env, q.err)
		}
		e.log.wait(2, "delivered", "id", id)
	})

	t.Run("partly delivered", func(t *testing.T) {
		p := &peer{
			lmtp: true,
			rcpt: func(addr string) string {
				if strings.HasPrefix(addr, "dave") {
					return "550 5.1.1 no such user"
				}
				return "250 2.1.5 ok"
			},
			final: []string{"250 2.0.0 saved", "452 4.2.2 mailbox full"},
		}
		e, id, q := run(t, p, "lmtp://", "bob@example.org", "carol@example.org", "dave@example.org")
		if q.err != nil {
			t.Fatalf("at QUIT: %v", q.err)
		}
		if done := []bool{q.env.Rcpts[0].Done, q.env.Rcpts[1].Done}; !done[0] || done[1] {
			t.Errorf("at QUIT the spool says bob done %v, carol done %v; want true, false", done[0], done[1])
		}
		if q.env.Attempts != 1 || q.env.NextTry.IsZero() {
			t.Errorf("at QUIT the spool says %d attempts, next at %v; want 1 and a time", q.env.Attempts, q.env.NextTry)
		}
		// Then the bounce for dave, and his recipient done with it.
		e.log.wait(1, "bounce queued", "id", id)
		e.log.wait(1, "deferred", "id", id, "rcpt", "carol@example.org")
		deadline := time.Now().Add(10 * time.Second)
		for {
			env, err := e.sp.Envelope(id)
			if err != nil {
				t.Fatal(err)
			}
			if env.Rcpts[2].Done {
				if !env.Rcpts[0].Done || env.Rcpts[1].Done {
					t.Errorf("after the bounce: %+v", env.Rcpts)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("dave never marked done after his bounce: %+v", env.Rcpts)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// TestQueueShutdown stops the queue while a delivery waits for the
// downstream: Run returns promptly and the recipient is saved as deferred,
// due at once: an interrupted attempt neither counts nor backs off.
func TestQueueShutdown(t *testing.T) {
	p := &peer{ext: []string{"PIPELINING"}, stalled: make(chan struct{}, 1)}
	addr := p.start(t)
	e := newRelayQueue(t, "smtp://"+addr, testQueueConfig())
	id := submit(t, e.sp, "alice@example.net", "bob@example.org")
	stop := runQueue(t, e.queue)
	select {
	case <-p.stalled:
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery reached DATA")
	}
	start := time.Now()
	stop()
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Run took %v to return", el)
	}
	env, err := e.sp.Envelope(id)
	if err != nil {
		t.Fatal(err)
	}
	if env.Attempts != 0 || !env.NextTry.IsZero() || env.Rcpts[0].Done || !strings.HasPrefix(env.Rcpts[0].Status, "451 ") {
		t.Errorf("saved state %+v, want a deferred recipient due at once, no attempt counted", env)
	}
}
