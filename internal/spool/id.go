package spool

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"sync"
	"time"
)

// idLen is the length of a message ID: 15 bytes in base32 (5 bits a
// character), so no padding.
const idLen = 24

// idEncoding is base32 with the "extended hex" alphabet, whose characters
// sort in the same order as the values they encode: IDs sort by time.
var idEncoding = base32.HexEncoding.WithPadding(base32.NoPadding)

// idGen makes message IDs: 8 bytes of Unix nanoseconds, forced to increase
// within a process so that IDs from one spool sort in commit order, then 7
// random bytes, which keep IDs from different processes (or from before a
// clock step back) apart: two processes would have to pick the same
// nanosecond and the same 56 random bits.
type idGen struct {
	mu   sync.Mutex
	last int64
}

func (g *idGen) next(now time.Time) string {
	g.mu.Lock()
	t := max(now.UnixNano(), g.last+1)
	g.last = t
	g.mu.Unlock()

	var b [15]byte
	binary.BigEndian.PutUint64(b[:8], uint64(t))
	rand.Read(b[8:]) // never fails, per its documentation
	return idEncoding.EncodeToString(b[:])
}

// validID reports whether id has the form idGen makes, which also makes it
// safe to use as a file name.
func validID(id string) bool {
	if len(id) != idLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'V') {
			return false
		}
	}
	return true
}

// IDTime is when the message with ID id was committed (from the ID itself:
// its first 8 bytes are the commit time); false for an ID not of this form.
func IDTime(id string) (time.Time, bool) {
	if !validID(id) {
		return time.Time{}, false
	}
	b, err := idEncoding.DecodeString(id)
	if err != nil || len(b) < 8 {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b[:8]))), true
}
