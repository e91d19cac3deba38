package spool

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// On-disk record layout, shared by message files (body = the message) and
// state files (empty body). Integers are little-endian; CRCs are CRC-32C.
//
//	body       bodyLen bytes
//	envelope   envLen bytes of JSON (diskEnvelope)
//	trailer    32 bytes:
//	  0  bodyLen     uint64
//	  8  envLen      uint32
//	  12 bodyCRC     uint32
//	  16 envCRC      uint32
//	  20 trailerCRC  uint32  CRC of trailer bytes 0..19
//	  24 magic       "MXQUEUE1" (the last byte is the format version)
//
// The envelope goes after the body because the body is streamed to disk
// before its size is known; the fixed trailer at the end of the file then
// doubles as a completeness check, since a truncated file loses it first.
const (
	trailerLen = 32
	// maxEnvelopeLen bounds what a corrupt trailer can make us allocate. An
	// envelope with thousands of recipients is still far below it.
	maxEnvelopeLen = 16 << 20
	formatMagic    = "MXQUEUE1"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is wrapped by every error that reports a damaged message or
// state file: bad magic, a checksum mismatch, a truncated file, an envelope
// that does not parse.
var ErrCorrupt = errors.New("spool: corrupt file")

// corruptError is a damaged file: its text says what is wrong, and it
// matches ErrCorrupt for errors.Is.
type corruptError struct{ detail string }

func (e *corruptError) Error() string        { return "corrupt file: " + e.detail }
func (e *corruptError) Is(target error) bool { return target == ErrCorrupt }

func corruptf(format string, args ...any) error {
	return &corruptError{fmt.Sprintf(format, args...)}
}

// diskEnvelope is the JSON form of an Envelope. It is separate from
// Envelope so that the file format changes only on purpose: a field added
// to Envelope must be added here too (TestEnvelopeRoundTripAllFields fails
// otherwise).
type diskEnvelope struct {
	ID       string     `json:"id"`
	From     string     `json:"from"`
	Rcpts    []diskRcpt `json:"rcpts"`
	Received time.Time  `json:"received"`
	ClientIP string     `json:"client_ip,omitempty"`
	Helo     string     `json:"helo,omitempty"`
	SMTPUTF8 bool       `json:"smtputf8,omitempty"`
	Size     int64      `json:"size"`
	Attempts int        `json:"attempts,omitempty"`
	NextTry  time.Time  `json:"next_try,omitzero"`
}

type diskRcpt struct {
	Addr   string `json:"addr"`
	Done   bool   `json:"done,omitempty"`
	Status string `json:"status,omitempty"`
}

// marshalEnvelope encodes env for disk. Addresses must be valid UTF-8,
// because JSON would otherwise silently replace bytes and mail would go to
// an address nobody sent; free-text fields are made valid instead, since
// they only feed logs, headers and DSNs.
func marshalEnvelope(env *Envelope) ([]byte, error) {
	if !validID(env.ID) {
		return nil, fmt.Errorf("spool: invalid message ID %q", env.ID)
	}
	if len(env.Rcpts) == 0 {
		return nil, errors.New("spool: envelope has no recipients")
	}
	if !utf8.ValidString(env.From) {
		return nil, fmt.Errorf("spool: sender %q is not valid UTF-8", env.From)
	}
	d := diskEnvelope{
		ID:       env.ID,
		From:     env.From,
		Rcpts:    make([]diskRcpt, len(env.Rcpts)),
		Received: env.Received,
		ClientIP: strings.ToValidUTF8(env.ClientIP, "\uFFFD"),
		Helo:     strings.ToValidUTF8(env.Helo, "\uFFFD"),
		SMTPUTF8: env.SMTPUTF8,
		Size:     env.Size,
		Attempts: env.Attempts,
		NextTry:  env.NextTry,
	}
	for i, r := range env.Rcpts {
		if !utf8.ValidString(r.Addr) {
			return nil, fmt.Errorf("spool: recipient %q is not valid UTF-8", r.Addr)
		}
		d.Rcpts[i] = diskRcpt{Addr: r.Addr, Done: r.Done, Status: strings.ToValidUTF8(r.Status, "\uFFFD")}
	}
	b, err := json.Marshal(&d)
	if err != nil {
		return nil, fmt.Errorf("spool: encoding envelope %s: %w", env.ID, err)
	}
	if len(b) > maxEnvelopeLen {
		return nil, fmt.Errorf("spool: envelope %s is %d bytes, more than the %d allowed", env.ID, len(b), maxEnvelopeLen)
	}
	return b, nil
}

func unmarshalEnvelope(b []byte) (*Envelope, error) {
	var d diskEnvelope
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, corruptf("envelope: %v", err)
	}
	if !validID(d.ID) {
		return nil, corruptf("envelope: invalid message ID %q", d.ID)
	}
	if len(d.Rcpts) == 0 {
		return nil, corruptf("envelope %s: no recipients", d.ID)
	}
	if d.Size < 0 || d.Attempts < 0 {
		return nil, corruptf("envelope %s: negative size or attempts", d.ID)
	}
	env := &Envelope{
		ID:       d.ID,
		From:     d.From,
		Rcpts:    make([]Rcpt, len(d.Rcpts)),
		Received: d.Received,
		ClientIP: d.ClientIP,
		Helo:     d.Helo,
		SMTPUTF8: d.SMTPUTF8,
		Size:     d.Size,
		Attempts: d.Attempts,
		NextTry:  d.NextTry,
	}
	for i, r := range d.Rcpts {
		env.Rcpts[i] = Rcpt(r)
	}
	return env, nil
}

// appendTrailer appends the envelope and the trailer that closes a record.
func appendTrailer(dst []byte, bodyLen int64, bodyCRC uint32, envJSON []byte) []byte {
	dst = append(dst, envJSON...)
	var t [trailerLen]byte
	binary.LittleEndian.PutUint64(t[0:], uint64(bodyLen))
	binary.LittleEndian.PutUint32(t[8:], uint32(len(envJSON)))
	binary.LittleEndian.PutUint32(t[12:], bodyCRC)
	binary.LittleEndian.PutUint32(t[16:], crc32.Checksum(envJSON, crcTable))
	binary.LittleEndian.PutUint32(t[20:], crc32.Checksum(t[:20], crcTable))
	copy(t[24:], formatMagic)
	return append(dst, t[:]...)
}

// record is what decodeRecord learns about a file besides its envelope.
type record struct {
	bodyLen int64
	bodyCRC uint32
}

// decodeRecord checks the trailer and envelope of the record in r, which is
// size bytes long, and returns the envelope. The body is not read: its
// checksum is verified by Body as it is read.
func decodeRecord(r io.ReaderAt, size int64) (*Envelope, record, error) {
	if size < trailerLen {
		return nil, record{}, corruptf("truncated: %d bytes, shorter than the trailer", size)
	}
	var t [trailerLen]byte
	if _, err := r.ReadAt(t[:], size-trailerLen); err != nil {
		return nil, record{}, fmt.Errorf("reading trailer: %w", err)
	}
	if string(t[24:]) != formatMagic {
		return nil, record{}, corruptf("no trailer (truncated, or not a spool file)")
	}
	if got, want := crc32.Checksum(t[:20], crcTable), binary.LittleEndian.Uint32(t[20:]); got != want {
		return nil, record{}, corruptf("trailer checksum %08x, want %08x", got, want)
	}
	bodyLen := binary.LittleEndian.Uint64(t[0:])
	envLen := int64(binary.LittleEndian.Uint32(t[8:]))
	if envLen > maxEnvelopeLen {
		return nil, record{}, corruptf("envelope length %d exceeds %d", envLen, maxEnvelopeLen)
	}
	if bodyLen > uint64(size) || int64(bodyLen)+envLen+trailerLen != size {
		return nil, record{}, corruptf("file is %d bytes, trailer says body %d + envelope %d + %d", size, bodyLen, envLen, trailerLen)
	}
	envJSON := make([]byte, envLen)
	if _, err := r.ReadAt(envJSON, int64(bodyLen)); err != nil {
		return nil, record{}, fmt.Errorf("reading envelope: %w", err)
	}
	if got, want := crc32.Checksum(envJSON, crcTable), binary.LittleEndian.Uint32(t[16:]); got != want {
		return nil, record{}, corruptf("envelope checksum %08x, want %08x", got, want)
	}
	env, err := unmarshalEnvelope(envJSON)
	if err != nil {
		return nil, record{}, err
	}
	return env, record{bodyLen: int64(bodyLen), bodyCRC: binary.LittleEndian.Uint32(t[12:])}, nil
}
