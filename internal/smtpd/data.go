package smtpd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// Protocol errors found in a message body. The reader keeps reading to the
// real end of data (CRLF.CRLF) after any of them, so the session stays in
// step with the client, and the whole message is refused; only a body that
// runs on past the reader's stop limit is not read to its end (ErrCut).
var (
	ErrBareLF      = errors.New("bare LF in message data")
	ErrBareCR      = errors.New("bare CR in message data")
	ErrNUL         = errors.New("NUL octet in message data")
	ErrLineTooLong = errors.New("message line longer than 1000 octets")
	ErrTooBig      = errors.New("message exceeds the size limit")
)

// ErrCut means the body ran on past the reader's stop limit and the reader
// gave up before the end of data: the rest is still on its way, so the
// session cannot go on in step with the client and must be closed.
var ErrCut = errors.New("message data cut off far over the size limit")

// maxTextLine is RFC 5321 4.5.3.1.6's limit, CRLF included.
const maxTextLine = 1000

// DataReader reads a message body sent after DATA and decodes the
// dot-stuffing. Only a line "." preceded and ended by CRLF ends the data:
// "\n.\n", "\n.\r\n", "\r.\r", "\r\n.\n" and the like are refused as bare
// LF or CR and never end the message, so no byte sequence smuggles a second
// message past the server (or past a downstream that reads them
// differently).
//
// Read returns io.EOF at the end of data when the body was clean, or the
// first protocol error (ErrBareLF etc.) after the end of data has been
// reached, or ErrCut once more than the stop limit was read without
// reaching it; any other error is the connection's (timeout, EOF).
type DataReader struct {
	br        *bufio.Reader
	max       int64  // size limit; 0 = none
	stop      int64  // octets after which reading ends with ErrCut; 0 = never
	n         int64  // octets received so far, as transmitted
	pending   []byte // decoded data not yet returned by Read
	lineStart bool   // the next octet starts a line
	prevCRLF  bool   // the last line ended in CRLF
	cutCR     bool   // the last segment was cut by the buffer right after a CR
	lineLen   int
	protoErr  error
	err       error         // sticky: io.EOF, protoErr or a connection error
	progress  func(n int64) // called after each segment with octets so far
}

// NewDataReader returns a reader for the body that follows a 354 reply.
// max is the size limit in octets (0 = none): a longer body is refused with
// ErrTooBig at its end. stop (0 = never) is where reading ends with ErrCut
// instead: at most stop octets plus one buffer's worth are read. progress,
// if not nil, is called after each chunk read with the total octets so far
// (the session uses it to move the data-block deadline).
func NewDataReader(br *bufio.Reader, max, stop int64, progress func(int64)) *DataReader {
	return &DataReader{br: br, max: max, stop: stop, lineStart: true, prevCRLF: true, progress: progress}
}

// Read implements io.Reader.
func (r *DataReader) Read(p []byte) (int, error) {
	for len(r.pending) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.next()
	}
	n := copy(p, r.pending)
	r.pending = r.pending[n:]
	return n, nil
}

// Size is the number of octets received so far, as transmitted.
func (r *DataReader) Size() int64 { return r.n }

// ProtocolError is the first protocol error found in the body, if any.
func (r *DataReader) ProtocolError() error { return r.protoErr }

// Drain reads and discards the rest of the body up to the end of data, so
// the session can reply and go on after a handler stopped reading early.
// It returns the connection error, if any, or ErrCut when the end of data
// was not reached within the stop limit.
func (r *DataReader) Drain() error {
	for r.err == nil {
		r.next()
	}
	r.pending = nil
	if r.err == io.EOF || r.err == r.protoErr {
		return nil
	}
	return r.err
}

// next reads one segment (a line, or a piece of one longer than the
// buffer) and decodes it into r.pending.
func (r *DataReader) next() {
	seg, err := r.br.ReadSlice('\n')
	if err != nil && err != bufio.ErrBufferFull {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		r.err = err
		return
	}
	r.n += int64(len(seg))
	if r.progress != nil {
		r.progress(r.n)
	}
	start := r.lineStart
	if start && r.prevCRLF && len(seg) == 3 && seg[0] == '.' && seg[1] == '\r' && seg[2] == '\n' {
		r.err = io.EOF
		if r.protoErr != nil {
			r.err = r.protoErr
		}
		return
	}
	if r.stop > 0 && r.n > r.stop {
		r.fail(ErrTooBig)
		r.err = ErrCut
		return
	}
	if start {
		r.lineLen = 0
	}
	r.lineLen += len(seg)
	r.lineStart = err == nil
	if err != nil {
		// The line is longer than the buffer, so far over 1000 octets and
		// refused anyway; remember a trailing CR so that the line's end
		// (and with it the end of data) is still judged right.
		r.fail(ErrLineTooLong)
		r.cutCR = seg[len(seg)-1] == '\r'
		return
	}
	var text []byte // the line without its ending
	switch {
	case len(seg) >= 2 && seg[len(seg)-2] == '\r':
		text = seg[:len(seg)-2]
		r.prevCRLF = true
	case len(seg) == 1 && r.cutCR:
		r.prevCRLF = true
	default:
		text = seg[:len(seg)-1]
		r.prevCRLF = false
		r.fail(ErrBareLF)
	}
	r.cutCR = false
	if bytes.IndexByte(text, '\r') >= 0 {
		r.fail(ErrBareCR)
	}
	if bytes.IndexByte(text, 0) >= 0 {
		r.fail(ErrNUL)
	}
	if r.lineLen > maxTextLine {
		r.fail(ErrLineTooLong)
	}
	if r.max > 0 && r.n > r.max {
		r.fail(ErrTooBig)
	}
	if r.protoErr != nil {
		return
	}
	if start && seg[0] == '.' {
		seg = seg[1:] // dot-unstuffing (RFC 5321 4.5.2)
	}
	r.pending = seg
}

// fail records the first protocol error; from then on the body is only
// read to its end, not returned.
func (r *DataReader) fail(err error) {
	if r.protoErr == nil {
		r.protoErr = err
	}
	r.pending = nil
}
