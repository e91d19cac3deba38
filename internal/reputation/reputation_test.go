package reputation

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/reason"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func testBook(t *testing.T, c *clock, trusted ...string) (*Book, *[]Ban) {
	t.Helper()
	var bans []Ban
	cfg := Config{
		Points:       map[reason.Reason]int{reason.Pregreet: -5, reason.UnknownUser: -1},
		TarpitBelow:  -3,
		TarpitStep:   500 * time.Millisecond,
		TarpitMax:    2 * time.Second,
		BanBelow:     -10,
		BanTime:      time.Hour,
		ForgiveAfter: time.Minute,
		MaxClients:   100,
	}
	tr := func(a netip.Addr) bool {
		for _, s := range trusted {
			if netip.MustParsePrefix(s).Contains(a) {
				return true
			}
		}
		return false
	}
	b, err := New(cfg, c.now, tr, func(ban Ban) { bans = append(bans, ban) })
	if err != nil {
		t.Fatal(err)
	}
	return b, &bans
}

var bot = netip.MustParseAddr("192.0.2.7")

func TestScoreTarpitBan(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	b, bans := testBook(t, c)
	if b.Score(bot) != 0 || b.Delay(bot) != 0 {
		t.Fatal("a new client is not neutral")
	}
	b.Penalize(bot, reason.UnknownUser, 0)
	b.Penalize(bot, reason.UnknownUser, 0)
	if n := b.Score(bot); n != -2 || b.Delay(bot) != 0 {
		t.Errorf("after two unknown users: score %d, delay %v", n, b.Delay(bot))
	}
	b.Penalize(bot, reason.UnknownUser, 0)
	b.Penalize(bot, reason.UnknownUser, 0) // -4: one point below the tarpit
	if d := b.Delay(bot); d != 500*time.Millisecond {
		t.Errorf("delay at -4 = %v", d)
	}
	b.SetStatic(bot, -3, reason.Access) // a blocklist weight: -7
	if d := b.Delay(bot); d != 2*time.Second {
		t.Errorf("delay at -7 = %v, want the 2s cap", d)
	}
	b.SetStatic(bot, -3, reason.Access) // set, not added
	if n := b.Score(bot); n != -7 {
		t.Errorf("standing part added up: %d", n)
	}
	if _, ok := b.Banned(bot); ok || len(*bans) != 0 {
		t.Fatal("banned too early")
	}
	_, ban := b.Penalize(bot, reason.Pregreet, 0) // -12
	if ban == nil || len(*bans) != 1 || ban.Reason != reason.Pregreet || ban.By != "score" || !ban.Expires.Equal(c.t.Add(time.Hour)) {
		t.Fatalf("ban %+v, told %+v", ban, *bans)
	}
	if got, ok := b.Banned(bot); !ok || got.Hits != 1 {
		t.Errorf("Banned = %+v, %v", got, ok)
	}
	if _, ok := b.Banned(netip.MustParseAddr("192.0.2.8")); ok {
		t.Error("a neighbour is banned")
	}
	if l := b.Bans(); len(l) != 1 || l[0].Hits != 1 {
		t.Errorf("Bans() = %+v", l)
	}
	// Forgiveness: a point a minute; the ban runs its hour.
	c.t = c.t.Add(5 * time.Minute)
	if n := b.Score(bot); n != -7 {
		t.Errorf("5 minutes later: %d, want -7", n)
	}
	c.t = c.t.Add(time.Hour)
	if _, ok := b.Banned(bot); ok {
		t.Error("the ban outlived its hour")
	}
	if n := b.Score(bot); n != -3 { // points forgiven; the standing part stays
		t.Errorf("an hour later: %d, want -3", n)
	}
}

func TestTrustedNeverScored(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	b, bans := testBook(t, c, "192.0.2.0/24")
	for range 20 {
		b.Penalize(bot, reason.Pregreet, 0)
	}
	if b.Score(bot) != 0 || b.Delay(bot) != 0 || len(*bans) != 0 {
		t.Errorf("trusted client scored %d, delay %v, bans %v", b.Score(bot), b.Delay(bot), *bans)
	}
	// An operator's ban of a network with a trusted client in it does not
	// refuse that client.
	b.Add(Ban{Prefix: netip.MustParsePrefix("192.0.2.0/23"), Reason: reason.Control, By: "deny", Expires: c.t.Add(time.Hour)})
	if _, ok := b.Banned(bot); ok {
		t.Error("a trusted client is refused by a ban")
	}
	if _, ok := b.Banned(netip.MustParseAddr("192.0.3.1")); !ok {
		t.Error("the ban does not hold outside the trusted network")
	}
}

func TestLift(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	b, _ := testBook(t, c)
	for i := range 3 {
		a := netip.MustParseAddr(fmt.Sprintf("198.51.100.%d", i+1))
		for range 3 {
			b.Penalize(a, reason.Pregreet, 0)
		}
	}
	if n := len(b.Bans()); n != 3 {
		t.Fatalf("%d bans", n)
	}
	if n := b.Lift(netip.MustParsePrefix("198.51.100.2/32")); n != 1 {
		t.Errorf("lifted %d", n)
	}
	if b.Score(netip.MustParseAddr("198.51.100.2")) != 0 {
		t.Error("the lifted client's score is kept")
	}
	if n := b.Lift(netip.MustParsePrefix("198.51.100.0/24")); n != 2 || len(b.Bans()) != 0 {
		t.Errorf("lifted %d, left %v", n, b.Bans())
	}
}

// TestDrop: Drop ends one ban exactly (not those inside a wider network)
// and keeps the score, which is the fleet's business, not the client's.
func TestDrop(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	b, _ := testBook(t, c)
	a := netip.MustParseAddr("198.51.100.1")
	for range 3 {
		b.Penalize(a, reason.Pregreet, 0)
	}
	b.Add(Ban{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Expires: c.t.Add(time.Hour)})
	if b.Drop(netip.MustParsePrefix("198.51.100.0/25")) {
		t.Error("dropped a ban that does not exist")
	}
	if !b.Drop(netip.MustParsePrefix("198.51.100.0/24")) {
		t.Error("the /24 ban was not dropped")
	}
	bans := b.Bans()
	if len(bans) != 1 || bans[0].Prefix != netip.MustParsePrefix("198.51.100.1/32") {
		t.Errorf("bans left: %v", bans)
	}
	if b.Score(a) >= 0 {
		t.Error("Drop forgot the score")
	}
}

// TestBounded: a flood from many addresses keeps MaxClients scores.
func TestBounded(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	b, _ := testBook(t, c)
	for i := range 10_000 {
		b.Penalize(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), reason.UnknownUser, 0)
	}
	if n := b.scores.Len(); n > 100 {
		t.Errorf("%d scores kept, bound 100", n)
	}
}

// TestBannedNarrowest: of the bans on networks that hold a client, the
// narrowest answers and counts the hit, every time; a narrower one that
// has expired is dropped and the wider one answers.
func TestBannedNarrowest(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	b, _ := testBook(t, c)
	b.Add(Ban{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Reason: reason.Control, By: "ban", Expires: c.t.Add(2 * time.Hour)})
	b.Add(Ban{Prefix: netip.MustParsePrefix("192.0.2.7/32"), Reason: reason.Pregreet, By: "score", Expires: c.t.Add(time.Hour)})
	b.Add(Ban{Prefix: netip.MustParsePrefix("192.0.0.0/16"), Reason: reason.Control, By: "ban", Expires: c.t.Add(3 * time.Hour)})
	for i := range 20 {
		got, ok := b.Banned(bot)
		if !ok || got.Prefix != netip.MustParsePrefix("192.0.2.7/32") || got.Hits != int64(i+1) {
			t.Fatalf("call %d: Banned = %+v, %v; want the /32's, hit %d", i, got, ok, i+1)
		}
	}
	if got, ok := b.Banned(netip.MustParseAddr("192.0.2.8")); !ok || got.Prefix != netip.MustParsePrefix("192.0.2.0/24") {
		t.Errorf("neighbour: Banned = %+v, %v; want the /24's", got, ok)
	}
	c.t = c.t.Add(time.Hour)
	if got, ok := b.Banned(bot); !ok || got.Prefix != netip.MustParsePrefix("192.0.2.0/24") || got.Hits != 2 {
		t.Errorf("after the /32 expired: Banned = %+v, %v; want the /24's, hit 2", got, ok)
	}
	if n := len(b.Bans()); n != 2 {
		t.Errorf("%d bans left, want 2 (the expired /32 dropped)", n)
	}
}

// TestBannedAllExpired: a client inside expired bans of every IPv4
// length gets none, and every one is dropped on the way.
func TestBannedAllExpired(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	b, _ := testBook(t, c)
	for bits := range 33 {
		b.Add(Ban{Prefix: netip.PrefixFrom(bot, bits), Expires: c.t.Add(time.Duration(bits+1) * time.Minute)})
	}
	b.Add(Ban{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Expires: c.t.Add(time.Hour)})
	c.t = c.t.Add(34 * time.Minute)
	if got, ok := b.Banned(bot); ok {
		t.Fatalf("Banned = %+v", got)
	}
	if bans := b.Bans(); len(bans) != 1 || bans[0].Prefix != netip.MustParsePrefix("198.51.100.0/24") {
		t.Errorf("bans left: %+v", bans)
	}
	if n := b.nbans.Load(); n != 1 {
		t.Errorf("nbans %d, want 1", n)
	}
}
