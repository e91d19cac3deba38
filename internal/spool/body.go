package spool

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// A Body reads the body of a queued message. Besides io.ReadSeekCloser it
// is an io.ReaderAt, so that delivery can read it again for a retry, for
// each Maildir copy and for a DSN excerpt without opening it again.
//
// Read checks the body's checksum: a Read that reaches the end of a body
// read in order from the start returns an error wrapping ErrCorrupt if the
// bytes are not the ones committed. ReadAt does not check.
//
// The body stays readable after Remove until it is closed.
type Body struct {
	f      *os.File
	id     string
	sr     *io.SectionReader
	want   uint32
	sum    uint32
	hashed int64 // bytes summed, all of them from offset 0 on
	err    error // sticky corruption error
}

// newBody reads the body of message id: size bytes at off in f, whose
// checksum is crc (a message file has it at offset 0, a log segment
// wherever its record is).
func newBody(f *os.File, id string, off, size int64, crc uint32) *Body {
	return &Body{f: f, id: id, sr: io.NewSectionReader(f, off, size), want: crc}
}

// Size returns the body's length in bytes.
func (b *Body) Size() int64 { return b.sr.Size() }

// Read reads the next bytes of the body.
func (b *Body) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	pos, _ := b.sr.Seek(0, io.SeekCurrent)
	n, err := b.sr.Read(p)
	if pos == b.hashed && n > 0 {
		b.sum = crc32.Update(b.sum, crcTable, p[:n])
		b.hashed += int64(n)
		if b.hashed == b.Size() && b.sum != b.want {
			b.err = fmt.Errorf("spool: message %s: %w", b.id, corruptf("body checksum %08x, want %08x", b.sum, b.want))
			return n, b.err
		}
	}
	if errors.Is(err, io.EOF) && pos+int64(n) < b.Size() {
		// The file shrank under us.
		b.err = fmt.Errorf("spool: message %s: %w", b.id, corruptf("body truncated at %d of %d bytes", pos+int64(n), b.Size()))
		return n, b.err
	}
	return n, err
}

// ReadAt reads len(p) bytes of the body at off.
func (b *Body) ReadAt(p []byte, off int64) (int, error) { return b.sr.ReadAt(p, off) }

// Seek sets the offset of the next Read.
func (b *Body) Seek(offset int64, whence int) (int64, error) { return b.sr.Seek(offset, whence) }

// Close closes the file.
func (b *Body) Close() error { return b.f.Close() }
