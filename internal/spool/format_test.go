package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
	"time"
)

// fixCRCs recomputes the envelope and trailer checksums of a record, so
// that a test or the fuzzer can change the envelope and still reach the
// JSON decoder. It leaves data alone when it has no well-formed trailer.
func fixCRCs(data []byte) []byte {
	if len(data) < trailerLen {
		return data
	}
	t := data[len(data)-trailerLen:]
	bodyLen := binary.LittleEndian.Uint64(t[0:])
	envLen := uint64(binary.LittleEndian.Uint32(t[8:]))
	if bodyLen > uint64(len(data)) || bodyLen+envLen+trailerLen != uint64(len(data)) {
		return data
	}
	env := data[bodyLen : bodyLen+envLen]
	binary.LittleEndian.PutUint32(t[16:], crc32.Checksum(env, crcTable))
	binary.LittleEndian.PutUint32(t[20:], crc32.Checksum(t[:20], crcTable))
	return data
}

func encodeRecord(t testing.TB, env *Envelope, body []byte) []byte {
	t.Helper()
	envJSON, err := marshalEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	return appendTrailer(bytes.Clone(body), int64(len(body)), crc32.Checksum(body, crcTable), envJSON)
}

func TestDecodeRecord(t *testing.T) {
	env := &Envelope{
		ID:       "0123456789ABCDEFGHIJKLMN",
		From:     "a@example.org",
		Rcpts:    []Rcpt{{Addr: "b@example.com"}, {Addr: "c@example.com", Done: true, Status: "250 ok"}},
		Received: time.Date(2025, 11, 25, 14, 0, 0, 0, time.UTC),
		Size:     5,
	}
	good := encodeRecord(t, env, []byte("hello"))
	got, rec, err := decodeRecord(bytes.NewReader(good), int64(len(good)))
	if err != nil {
		t.Fatal(err)
	}
	if !envEqual(got, env) || rec.bodyLen != 5 || rec.bodyCRC != crc32.Checksum([]byte("hello"), crcTable) {
		t.Errorf("decoded %+v %+v", got, rec)
	}

	withJSON := func(js string) []byte {
		return fixCRCs(appendTrailer([]byte("hello"), 5, 0, []byte(js)))
	}
	bad := map[string][]byte{
		"empty":           nil,
		"short":           good[:trailerLen-1],
		"no magic":        append(bytes.Clone(good[:len(good)-1]), '2'),
		"not JSON":        withJSON("{"),
		"JSON not object": withJSON(`"x"`),
		"bad ID":          withJSON(`{"id":"../x","rcpts":[{"addr":"a"}]}`),
		"no rcpts":        withJSON(`{"id":"0123456789ABCDEFGHIJKLMN","rcpts":[]}`),
		"negative size":   withJSON(`{"id":"0123456789ABCDEFGHIJKLMN","rcpts":[{"addr":"a"}],"size":-1}`),
		"bad time":        withJSON(`{"id":"0123456789ABCDEFGHIJKLMN","rcpts":[{"addr":"a"}],"received":"yesterday"}`),
		"huge envelope length": func() []byte {
			b := bytes.Clone(good)
			binary.LittleEndian.PutUint32(b[len(b)-trailerLen+8:], maxEnvelopeLen+1)
			binary.LittleEndian.PutUint32(b[len(b)-12:], crc32.Checksum(b[len(b)-trailerLen:len(b)-12], crcTable))
			return b
		}(),
		"body length past the end": func() []byte {
			b := bytes.Clone(good)
			binary.LittleEndian.PutUint64(b[len(b)-trailerLen:], 1<<63)
			binary.LittleEndian.PutUint32(b[len(b)-12:], crc32.Checksum(b[len(b)-trailerLen:len(b)-12], crcTable))
			return b
		}(),
	}
	for name, data := range bad {
		t.Run(name, func(t *testing.T) {
			if _, _, err := decodeRecord(bytes.NewReader(data), int64(len(data))); !errors.Is(err, ErrCorrupt) {
				t.Errorf("decodeRecord: %v, want ErrCorrupt", err)
			}
		})
	}
}

// FuzzDecode feeds arbitrary files to the decoder, as found and with their
// checksums made right so that mutations reach the envelope parser. It
// must never panic, and whatever it accepts must encode and decode again
// to the same envelope.
func FuzzDecode(f *testing.F) {
	f.Add(encodeRecord(f, &Envelope{ID: "0123456789ABCDEFGHIJKLMN", From: "a@x", Rcpts: []Rcpt{{Addr: "b@y"}}, Size: 3}, []byte("abc")))
	f.Add(encodeRecord(f, &Envelope{ID: "VVVVVVVVVVVVVVVVVVVVVVVV", Rcpts: []Rcpt{{Addr: "b@y", Done: true, Status: "550 no"}, {Addr: "ü@y"}}, Attempts: 2, NextTry: time.Unix(1e9, 0)}, nil))
	f.Add([]byte("MXQUEUE1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, d := range [][]byte{data, fixCRCs(bytes.Clone(data))} {
			env, rec, err := decodeRecord(bytes.NewReader(d), int64(len(d)))
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("error %v does not wrap ErrCorrupt", err)
				}
				continue
			}
			if rec.bodyLen < 0 || rec.bodyLen > int64(len(d)) {
				t.Fatalf("body length %d in a %d-byte file", rec.bodyLen, len(d))
			}
			again := encodeRecord(t, env, d[:rec.bodyLen])
			env2, _, err := decodeRecord(bytes.NewReader(again), int64(len(again)))
			if err != nil {
				t.Fatalf("re-encoded record does not decode: %v", err)
			}
			if !envEqual(env, env2) {
				t.Fatalf("re-encoding changed the envelope:\n%+v\n%+v", env, env2)
			}
		}
	})
}
