package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Segment file layout: the log that small messages are appended to (see
// the package documentation for why). Integers are little-endian; CRCs
// are CRC-32C.
//
//	header, 32 bytes:
//	  0  magic     "MXSEG001" (the last byte is the format version)
//	  8  seq       uint64: the segment's number, which is also its file name
//	  16 salt      8 random bytes, repeated at the start of every record
//	  24 zero      uint32
//	  28 hdrCRC    uint32: of bytes 0..27
//	records, one after the other, each:
//	  0  salt      the segment's salt
//	  8  kind      uint8: 1 message, 2 done
//	  9  zero      3 bytes
//	  12 bodyLen   uint32
//	  16 envLen    uint32
//	  20 bodyCRC   uint32
//	  24 envCRC    uint32
//	  28 hdrCRC    uint32: of bytes 0..27
//	  32 body      bodyLen bytes: the message as received (message), none (done)
//	     env       envLen bytes: the envelope as JSON (message), the message ID (done)
//
// A record is taken only if all three checksums match and its lengths fit
// the file, so a record cut short by a crash (its end never written) is
// recognised and dropped: no half message is ever read back. The salt,
// drawn afresh for each segment, makes the bytes of a message body unable
// to pass for a record: a body is chosen by whoever sends the mail, and
// after damage to the record before it, the scanner searches the rest of
// the file for the next record, so without the salt a sender could plant
// an envelope of its own choosing there. It cannot know the salt.
const (
	segMagic      = "MXSEG001"
	segHeaderLen  = 32
	recHeaderLen  = 32
	saltLen       = 8
	recordMessage = 1
	recordDone    = 2
	// maxLogBody bounds the body of a record the scanner accepts: what a
	// damaged length field can make it read. The writer's bound (logMax)
	// is below it, so that the bound can grow without a format change.
	maxLogBody = 1 << 20
	// scanWindow is how much the scanner reads at a time while searching
	// for the next record after damage.
	scanWindow = 64 << 10
)

type salt [saltLen]byte

// appendSegmentHeader appends the header of segment seq.
func appendSegmentHeader(dst []byte, seq uint64, s salt) []byte {
	var h [segHeaderLen]byte
	copy(h[0:], segMagic)
	binary.LittleEndian.PutUint64(h[8:], seq)
	copy(h[16:], s[:])
	binary.LittleEndian.PutUint32(h[28:], crc32.Checksum(h[:28], crcTable))
	return append(dst, h[:]...)
}

// parseSegmentHeader checks the header in h (at least segHeaderLen bytes)
// and returns the segment's number and salt.
func parseSegmentHeader(h []byte) (seq uint64, s salt, err error) {
	if len(h) < segHeaderLen {
		return 0, s, corruptf("segment header: %d bytes, want %d", len(h), segHeaderLen)
	}
	if string(h[:8]) != segMagic {
		return 0, s, corruptf("segment header: bad magic %q", h[:8])
	}
	if got, want := crc32.Checksum(h[:28], crcTable), binary.LittleEndian.Uint32(h[28:]); got != want {
		return 0, s, corruptf("segment header: checksum %08x, want %08x", got, want)
	}
	if binary.LittleEndian.Uint32(h[24:]) != 0 {
		return 0, s, corruptf("segment header: reserved bytes not zero")
	}
	copy(s[:], h[16:24])
	return binary.LittleEndian.Uint64(h[8:]), s, nil
}

// newRecord starts a record of kind in dst (reset), with room for the
// header: the caller appends body and envelope, then calls finishRecord.
func newRecord(dst []byte, kind byte) []byte {
	var h [recHeaderLen]byte
	h[8] = kind
	return append(dst[:0], h[:]...)
}

// finishRecord fills in the lengths and checksums of rec, whose body is
// the bodyLen bytes after the header and whose envelope is the rest. The
// salt and the header checksum are left to sealRecord, since the segment
// a record goes into is known only when it is written.
func finishRecord(rec []byte, bodyLen int, bodyCRC uint32) {
	env := rec[recHeaderLen+bodyLen:]
	binary.LittleEndian.PutUint32(rec[12:], uint32(bodyLen))
	binary.LittleEndian.PutUint32(rec[16:], uint32(len(env)))
	binary.LittleEndian.PutUint32(rec[20:], bodyCRC)
	binary.LittleEndian.PutUint32(rec[24:], crc32.Checksum(env, crcTable))
}

// sealRecord stamps rec with the salt of the segment it goes into.
func sealRecord(rec []byte, s salt) {
	copy(rec[0:], s[:])
	binary.LittleEndian.PutUint32(rec[28:], crc32.Checksum(rec[:28], crcTable))
}

// doneRecord appends to dst a sealed-later record saying that message id
// has left the spool.
func doneRecord(dst []byte, id string) []byte {
	dst = newRecord(dst, recordDone)
	dst = append(dst, id...)
	finishRecord(dst, 0, 0)
	return dst
}

// logRecord is one record found by a segmentScanner.
type logRecord struct {
	kind    byte
	off     int64     // of the record's header in the file
	end     int64     // the offset just after the record
	bodyLen int64     // the body is at off+recHeaderLen
	bodyCRC uint32    // of the body
	envLen  int64     // the envelope (or ID) follows the body
	envCRC  uint32    // of the envelope
	env     *Envelope // kind recordMessage
	id      string    // the message's ID, either kind
}

func (r *logRecord) bodyOff() int64 { return r.off + recHeaderLen }

// A segmentScanner reads the records of one segment in order. It never
// reads more than one record (at most maxLogBody + maxEnvelopeLen bytes
// and the header) or scanWindow bytes at a time, whatever the file holds.
type segmentScanner struct {
	r    io.ReaderAt
	size int64
	seq  uint64
	salt salt
	off  int64  // of the next record
	buf  []byte // a record's payload
	win  []byte // a window of the file while searching for a record
}

// newSegmentScanner checks the header of the segment in r, size bytes
// long, and returns a scanner positioned at its first record.
func newSegmentScanner(r io.ReaderAt, size int64) (*segmentScanner, error) {
	var h [segHeaderLen]byte
	if size < segHeaderLen {
		return nil, corruptf("segment header: file is %d bytes, shorter than the header", size)
	}
	if _, err := r.ReadAt(h[:], 0); err != nil {
		return nil, fmt.Errorf("reading segment header: %w", err)
	}
	seq, s, err := parseSegmentHeader(h[:])
	if err != nil {
		return nil, err
	}
	return &segmentScanner{r: r, size: size, seq: seq, salt: s, off: segHeaderLen}, nil
}

// A scanDamage is a stretch of a segment that holds no valid record:
// [Off, Off+Len). Torn says it runs to the end of the file with no record
// after it, which is what a crash in the middle of a write leaves.
type scanDamage struct {
	Off, Len int64
	Torn     bool
	Why      string // what was wrong with the bytes at Off
}

// next returns the next record. At the end of the file it returns io.EOF.
// Where the bytes at the current offset are not a valid record, it
// returns a *scanDamage describing them (as an error) and moves past
// them to the next valid record, if any: the next call returns that one.
// Other errors are I/O errors.
func (s *segmentScanner) next() (logRecord, error) {
	if s.off >= s.size {
		return logRecord{}, io.EOF
	}
	rec, err := s.recordAt(s.off)
	if err == nil {
		s.off = rec.end
		return rec, nil
	}
	var c *corruptError
	if !errors.As(err, &c) {
		return logRecord{}, err
	}
	at := s.off
	nextOff, err := s.resync(at + 1)
	if err != nil {
		return logRecord{}, err
	}
	d := &scanDamage{Off: at, Len: nextOff - at, Torn: nextOff == s.size, Why: c.detail}
	s.off = nextOff
	return logRecord{}, d
}

func (d *scanDamage) Error() string {
	if d.Torn {
		return fmt.Sprintf("incomplete record at offset %d (%d bytes to the end of the file): %s", d.Off, d.Len, d.Why)
	}
	return fmt.Sprintf("damaged record at offset %d (%d bytes skipped): %s", d.Off, d.Len, d.Why)
}

// resync returns the offset of the first valid record at or after from,
// or the file size if there is none. Candidates are the places where the
// salt occurs.
func (s *segmentScanner) resync(from int64) (int64, error) {
	if s.win == nil {
		s.win = make([]byte, min(scanWindow, s.size))
	}
	win := s.win
	for off := from; off+recHeaderLen <= s.size; {
		n, err := s.r.ReadAt(win[:min(int64(len(win)), s.size-off)], off)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("reading segment at %d: %w", off, err)
		}
		w := win[:n]
		for i := 0; ; {
			j := bytes.Index(w[i:], s.salt[:])
			if j < 0 {
				break
			}
			cand := off + int64(i+j)
			if _, err := s.recordAt(cand); err == nil {
				return cand, nil
			} else if !errors.As(err, new(*corruptError)) {
				return 0, err
			}
			i += j + 1
		}
		if n < saltLen {
			break
		}
		// Windows overlap by saltLen-1 bytes, so that a salt across
		// their boundary is found.
		off += int64(n - (saltLen - 1))
	}
	return s.size, nil
}

// recordAt reads and checks the record at off. A record that is not
// valid is reported as a *corruptError.
func (s *segmentScanner) recordAt(off int64) (logRecord, error) {
	if s.size-off < recHeaderLen {
		return logRecord{}, corruptf("%d bytes left, shorter than a record header", s.size-off)
	}
	var h [recHeaderLen]byte
	if _, err := s.r.ReadAt(h[:], off); err != nil {
		return logRecord{}, fmt.Errorf("reading segment at %d: %w", off, err)
	}
	if !bytes.Equal(h[:saltLen], s.salt[:]) {
		return logRecord{}, corruptf("no record header (salt does not match)")
	}
	if got, want := crc32.Checksum(h[:28], crcTable), binary.LittleEndian.Uint32(h[28:]); got != want {
		return logRecord{}, corruptf("record header checksum %08x, want %08x", got, want)
	}
	kind := h[8]
	if (kind != recordMessage && kind != recordDone) || h[9] != 0 || h[10] != 0 || h[11] != 0 {
		return logRecord{}, corruptf("unknown record kind %d", kind)
	}
	bodyLen := int64(binary.LittleEndian.Uint32(h[12:]))
	envLen := int64(binary.LittleEndian.Uint32(h[16:]))
	if bodyLen > maxLogBody || envLen > maxEnvelopeLen {
		return logRecord{}, corruptf("record lengths %d and %d exceed %d and %d", bodyLen, envLen, maxLogBody, maxEnvelopeLen)
	}
	end := off + recHeaderLen + bodyLen + envLen
	if end > s.size {
		return logRecord{}, corruptf("record of %d bytes runs past the end of the file (%d bytes left)", end-off, s.size-off)
	}
	if n := int(bodyLen + envLen); cap(s.buf) < n {
		s.buf = make([]byte, n)
	}
	payload := s.buf[:bodyLen+envLen]
	if _, err := s.r.ReadAt(payload, off+recHeaderLen); err != nil {
		return logRecord{}, fmt.Errorf("reading segment at %d: %w", off+recHeaderLen, err)
	}
	body, env := payload[:bodyLen], payload[bodyLen:]
	if got, want := crc32.Checksum(body, crcTable), binary.LittleEndian.Uint32(h[20:]); got != want {
		return logRecord{}, corruptf("body checksum %08x, want %08x", got, want)
	}
	if got, want := crc32.Checksum(env, crcTable), binary.LittleEndian.Uint32(h[24:]); got != want {
		return logRecord{}, corruptf("envelope checksum %08x, want %08x", got, want)
	}
	rec := logRecord{kind: kind, off: off, end: end, bodyLen: bodyLen, bodyCRC: binary.LittleEndian.Uint32(h[20:]),
		envLen: envLen, envCRC: binary.LittleEndian.Uint32(h[24:])}
	switch kind {
	case recordMessage:
		e, err := unmarshalEnvelope(env)
		if err != nil {
			return logRecord{}, err
		}
		if e.Size != bodyLen {
			return logRecord{}, corruptf("envelope of %s says size %d, record has a body of %d", e.ID, e.Size, bodyLen)
		}
		rec.env, rec.id = e, e.ID
	case recordDone:
		if bodyLen != 0 || !validID(string(env)) {
			return logRecord{}, corruptf("done record with a body of %d bytes and ID %q", bodyLen, env)
		}
		rec.id = string(env)
	}
	return rec, nil
}
