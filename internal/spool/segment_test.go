package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"strings"
	"testing"
	"time"
)

var testSalt = salt{1, 2, 3, 4, 5, 6, 7, 8}

// messageRecord encodes a sealed message record for env and body.
func messageRecord(t testing.TB, s salt, env *Envelope, body []byte) []byte {
	t.Helper()
	e := *env
	e.Size = int64(len(body))
	envJSON, err := marshalEnvelope(&e)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecord(nil, recordMessage)
	rec = append(rec, body...)
	rec = append(rec, envJSON...)
	finishRecord(rec, len(body), crc32.Checksum(body, crcTable))
	sealRecord(rec, s)
	return rec
}

func sealedDone(s salt, id string) []byte {
	rec := doneRecord(nil, id)
	sealRecord(rec, s)
	return rec
}

func segEnv(id string) *Envelope {
	return &Envelope{ID: id, From: "a@example.org", Rcpts: []Rcpt{{Addr: "b@example.com"}},
		Received: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)}
}

const (
	idA = "0123456789ABCDEFGHIJKLMN"
	idB = "0123456789ABCDEFGHIJKLMO"
	idC = "0123456789ABCDEFGHIJKLMP"
)

// testSegment is a segment of three messages and a done record, with the
// offset of each record.
func testSegment(t testing.TB) (data []byte, offs []int64) {
	data = appendSegmentHeader(nil, 7, testSalt)
	for _, rec := range [][]byte{
		messageRecord(t, testSalt, segEnv(idA), []byte("Subject: a\r\n\r\nfirst\r\n")),
		messageRecord(t, testSalt, segEnv(idB), bytes.Repeat([]byte("second line\r\n"), 100)),
		sealedDone(testSalt, idA),
		messageRecord(t, testSalt, segEnv(idC), nil),
	} {
		offs = append(offs, int64(len(data)))
		data = append(data, rec...)
	}
	return data, offs
}

// scanAll scans data to its end and returns the records and damage found.
func scanAll(t testing.TB, data []byte) ([]logRecord, []*scanDamage, error) {
	t.Helper()
	sc, err := newSegmentScanner(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, nil, err
	}
	var recs []logRecord
	var damage []*scanDamage
	for i := 0; ; i++ {
		if i > len(data) {
			t.Fatalf("scanner made %d steps over %d bytes", i, len(data))
		}
		rec, err := sc.next()
		if errors.Is(err, io.EOF) {
			return recs, damage, nil
		}
		var d *scanDamage
		if errors.As(err, &d) {
			damage = append(damage, d)
			continue
		}
		if err != nil {
			t.Fatalf("scan: %v", err)
		}
		recs = append(recs, rec)
	}
}

func TestSegmentRoundTrip(t *testing.T) {
	data, offs := testSegment(t)
	sc, err := newSegmentScanner(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if sc.seq != 7 || sc.salt != testSalt {
		t.Errorf("header: seq %d salt %v", sc.seq, sc.salt)
	}
	recs, damage, err := scanAll(t, data)
	if err != nil || len(damage) > 0 {
		t.Fatalf("scan: %v %v", err, damage)
	}
	want := []struct {
		kind byte
		id   string
		body string
	}{
		{recordMessage, idA, "Subject: a\r\n\r\nfirst\r\n"},
		{recordMessage, idB, strings.Repeat("second line\r\n", 100)},
		{recordDone, idA, ""},
		{recordMessage, idC, ""},
	}
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d", len(recs), len(want))
	}
	for i, w := range want {
		r := recs[i]
		body := string(data[r.bodyOff() : r.bodyOff()+r.bodyLen])
		if r.kind != w.kind || r.id != w.id || body != w.body || r.off != offs[i] {
			t.Errorf("record %d: kind %d id %s at %d, body %q; want kind %d id %s at %d, body %q", i, r.kind, r.id, r.off, body, w.kind, w.id, offs[i], w.body)
		}
		if r.kind == recordMessage && (r.env.ID != w.id || r.env.Size != int64(len(w.body)) || r.env.Rcpts[0].Addr != "b@example.com") {
			t.Errorf("record %d: envelope %+v", i, r.env)
		}
	}
}

// TestSegmentTruncated cuts a segment at every length, as a crash in the
// middle of a write may leave it: every record wholly before the cut is
// read back, the cut one is reported as incomplete at its offset, and no
// part of it is ever returned.
func TestSegmentTruncated(t *testing.T) {
	data, offs := testSegment(t)
	ends := append(offs[1:], int64(len(data)))
	for n := 0; n <= len(data); n++ {
		recs, damage, err := scanAll(t, data[:n])
		if n < segHeaderLen {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("cut at %d: header error %v, want ErrCorrupt", n, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("cut at %d: %v", n, err)
		}
		whole := 0
		for _, e := range ends {
			if e <= int64(n) {
				whole++
			}
		}
		if len(recs) != whole {
			t.Fatalf("cut at %d: %d records, want %d", n, len(recs), whole)
		}
		cut := whole < len(offs) && offs[whole] < int64(n)
		switch {
		case cut && (len(damage) != 1 || !damage[0].Torn || damage[0].Off != offs[whole] || damage[0].Off+damage[0].Len != int64(n)):
			t.Fatalf("cut at %d: damage %+v, want one incomplete record at %d", n, damage, offs[whole])
		case !cut && len(damage) != 0:
			t.Fatalf("cut at %d, between records: damage %+v", n, damage)
		}
	}
}

// TestSegmentDamaged flips one byte at each offset of the second record:
// the records before and after it are read, it is not, and the damage is
// reported at its offset.
func TestSegmentDamaged(t *testing.T) {
	data, offs := testSegment(t)
	for i := offs[1]; i < offs[2]; i++ {
		bad := bytes.Clone(data)
		bad[i] ^= 0x40
		recs, damage, err := scanAll(t, bad)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range recs {
			ids = append(ids, r.id)
		}
		if got, want := strings.Join(ids, " "), idA+" "+idA+" "+idC; got != want {
			t.Fatalf("byte %d flipped: records %s, want %s", i, got, want)
		}
		if len(damage) != 1 || damage[0].Torn || damage[0].Off != offs[1] || damage[0].Len != offs[2]-offs[1] {
			t.Fatalf("byte %d flipped: damage %+v, want %d bytes at %d", i, damage, offs[2]-offs[1], offs[1])
		}
	}
}

// TestSegmentPlantedRecord: a message whose body is a well-formed record
// (as anyone can write one, salt aside) is damaged; the scan skips to the
// next real record and does not take the planted one, whose salt is not
// the segment's. With the segment's salt it would (the second case), which
// is why each segment draws its own.
func TestSegmentPlantedRecord(t *testing.T) {
	for _, tt := range []struct {
		name       string
		plantSalt  salt
		wantPlant  bool
		wantDamage int
	}{
		{"unknown salt", salt{9, 9, 9, 9, 9, 9, 9, 9}, false, 1},
		{"the segment's salt", testSalt, true, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			evil := segEnv(idC)
			evil.Rcpts = []Rcpt{{Addr: "victim@example.net"}}
			planted := messageRecord(t, tt.plantSalt, evil, []byte("spam"))
			data := appendSegmentHeader(nil, 1, testSalt)
			carrier := int64(len(data))
			data = append(data, messageRecord(t, testSalt, segEnv(idA), append([]byte("x\r\n"), planted...))...)
			data = append(data, messageRecord(t, testSalt, segEnv(idB), []byte("after\r\n"))...)
			data[carrier+recHeaderLen+1] ^= 1 // the carrier's body
			recs, damage, err := scanAll(t, data)
			if err != nil {
				t.Fatal(err)
			}
			gotPlant := false
			for _, r := range recs {
				if r.kind == recordMessage && r.env.Rcpts[0].Addr == "victim@example.net" {
					gotPlant = true
				}
			}
			if gotPlant != tt.wantPlant || len(damage) != tt.wantDamage || recs[len(recs)-1].id != idB {
				t.Fatalf("planted record taken: %v (want %v); damage %+v; records %+v", gotPlant, tt.wantPlant, damage, recs)
			}
		})
	}
}

func TestSegmentHeader(t *testing.T) {
	good := appendSegmentHeader(nil, 42, testSalt)
	if seq, s, err := parseSegmentHeader(good); err != nil || seq != 42 || s != testSalt {
		t.Fatalf("good header: %d %v %v", seq, s, err)
	}
	for name, mutate := range map[string]func([]byte) []byte{
		"short":    func(b []byte) []byte { return b[:20] },
		"magic":    func(b []byte) []byte { b[0] = 'X'; return b },
		"checksum": func(b []byte) []byte { b[29] ^= 1; return b },
		"seq":      func(b []byte) []byte { b[8]++; return b },
		"reserved": func(b []byte) []byte {
			b[24] = 1
			binary.LittleEndian.PutUint32(b[28:], crc32.Checksum(b[:28], crcTable))
			return b
		},
	} {
		_, _, err := parseSegmentHeader(mutate(bytes.Clone(good)))
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}

// fixSegment makes the checksums of a segment right (header and every
// record its lengths delimit, each given the header's salt), so that the
// fuzzer's mutations reach the checks behind them: lengths, kinds, IDs,
// the envelope parser.
func fixSegment(data []byte) []byte {
	if len(data) < segHeaderLen {
		return data
	}
	binary.LittleEndian.PutUint32(data[28:], crc32.Checksum(data[:28], crcTable))
	var s salt
	copy(s[:], data[16:24])
	for off := segHeaderLen; off+recHeaderLen <= len(data); {
		h := data[off:]
		bodyLen := int(binary.LittleEndian.Uint32(h[12:]))
		envLen := int(binary.LittleEndian.Uint32(h[16:]))
		if bodyLen > len(h) || envLen > len(h) || recHeaderLen+bodyLen+envLen > len(h) {
			break
		}
		body := h[recHeaderLen : recHeaderLen+bodyLen]
		env := h[recHeaderLen+bodyLen : recHeaderLen+bodyLen+envLen]
		binary.LittleEndian.PutUint32(h[20:], crc32.Checksum(body, crcTable))
		binary.LittleEndian.PutUint32(h[24:], crc32.Checksum(env, crcTable))
		sealRecord(h, s)
		off += recHeaderLen + bodyLen + envLen
	}
	return data
}

// FuzzSegment feeds arbitrary bytes to the segment scanner, as found and
// with their checksums made right. It must never panic or loop, must
// cover the file exactly with records and damage in order, and every
// record it returns must be there as returned: checksums that match and
// an envelope that reads the same again.
func FuzzSegment(f *testing.F) {
	data, offs := testSegment(f)
	f.Add(data)
	f.Add(data[:offs[2]+5])
	bad := bytes.Clone(data)
	bad[offs[1]+40] ^= 1
	f.Add(bad)
	f.Add(appendSegmentHeader(nil, 1, testSalt))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, d := range [][]byte{data, fixSegment(bytes.Clone(data))} {
			recs, damage, err := scanAll(t, d)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("header error %v does not wrap ErrCorrupt", err)
				}
				continue
			}
			checkCoverage(t, d, recs, damage)
			for _, r := range recs {
				body := d[r.bodyOff() : r.bodyOff()+r.bodyLen]
				if crc32.Checksum(body, crcTable) != r.bodyCRC {
					t.Fatalf("record at %d: body checksum does not match", r.off)
				}
				if r.kind != recordMessage {
					continue
				}
				again, err := marshalEnvelope(r.env)
				if err != nil {
					t.Fatalf("record at %d: envelope does not encode again: %v", r.off, err)
				}
				env2, err := unmarshalEnvelope(again)
				if err != nil || !envEqual(r.env, env2) {
					t.Fatalf("record at %d: envelope changed in a round trip: %v\n%+v\n%+v", r.off, err, r.env, env2)
				}
			}
		}
	})
}

// checkCoverage checks that records and damage tile the file after its
// header, in order, and that only a stretch at the very end is torn.
func checkCoverage(t *testing.T, d []byte, recs []logRecord, damage []*scanDamage) {
	t.Helper()
	type span struct{ off, end int64 }
	var spans []span
	for _, r := range recs {
		spans = append(spans, span{r.off, r.end})
	}
	for _, x := range damage {
		if x.Len <= 0 {
			t.Fatalf("damage of %d bytes at %d", x.Len, x.Off)
		}
		if x.Torn != (x.Off+x.Len == int64(len(d))) {
			t.Fatalf("damage %+v in a %d-byte file: torn flag wrong", x, len(d))
		}
		spans = append(spans, span{x.Off, x.Off + x.Len})
	}
	// Sort by offset (few spans).
	for i := range spans {
		for j := i + 1; j < len(spans); j++ {
			if spans[j].off < spans[i].off {
				spans[i], spans[j] = spans[j], spans[i]
			}
		}
	}
	at := int64(segHeaderLen)
	for _, s := range spans {
		if s.off != at || s.end <= s.off {
			t.Fatalf("spans %v do not tile the file from %d", spans, segHeaderLen)
		}
		at = s.end
	}
	if at != int64(len(d)) && len(d) > segHeaderLen {
		t.Fatalf("spans %v end at %d, file at %d", spans, at, len(d))
	}
}
