package smtpd

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestDataReader(t *testing.T) {
	tests := []struct {
		name, in string
		want     string // decoded body when err is nil
		err      error
		rest     string // what is left for the command reader
	}{
		{"plain", "a\r\nb\r\n.\r\nQUIT\r\n", "a\r\nb\r\n", nil, "QUIT\r\n"},
		{"empty", ".\r\n", "", nil, ""},
		{"stuffed", "..a\r\n.\r\n", ".a\r\n", nil, ""},
		{"dot only mid", "a\r\n. b\r\n.\r\n", "a\r\n b\r\n", nil, ""},
		{"bare lf", "a\nb\r\n.\r\nX", "", ErrBareLF, "X"},
		{"lf dot lf", "a\n.\nb\r\n.\r\nX", "", ErrBareLF, "X"},
		{"lf dot crlf", "a\n.\r\nb\r\n.\r\nX", "", ErrBareLF, "X"},
		{"cr dot cr", "a\r.\rb\r\n.\r\nX", "", ErrBareCR, "X"},
		{"crlf dot cr", "a\r\n.\rb\r\n.\r\nX", "", ErrBareCR, "X"},
		{"crlf dot lf", "a\r\n.\nb\r\n.\r\nX", "", ErrBareLF, "X"},
		{"nul", "a\x00\r\n.\r\nX", "", ErrNUL, "X"},
		{"long line", strings.Repeat("x", 999) + "\r\n.\r\nX", "", ErrLineTooLong, "X"},
		{"998+crlf ok", strings.Repeat("x", 998) + "\r\n.\r\n", strings.Repeat("x", 998) + "\r\n", nil, ""},
		{"very long line", strings.Repeat("x", 10000) + "\r\n.\r\nX", "", ErrLineTooLong, "X"},
		{"long line cut at CR", strings.Repeat("x", 4095) + "\r\n.\r\nX", "", ErrLineTooLong, "X"},
		{"eof", "a\r\nb", "", io.ErrUnexpectedEOF, ""},
		{"8bit", "caf\xc3\xa9\r\n.\r\n", "caf\xc3\xa9\r\n", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tt.in), readBufSize)
			dr := NewDataReader(br, 0, 0, nil)
			got, err := io.ReadAll(dr)
			if err == nil && tt.err == nil && string(got) != tt.want {
				t.Errorf("body = %q, want %q", got, tt.want)
			}
			if err != tt.err {
				t.Errorf("err = %v, want %v", err, tt.err)
			}
			if err == io.ErrUnexpectedEOF {
				return
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != tt.rest {
				t.Errorf("left %q for the command reader, want %q", rest, tt.rest)
			}
		})
	}
}

// TestDataReaderSizeLimit: a body over the size limit but within the stop
// limit is read to its end and refused there, in step with the client.
func TestDataReaderSizeLimit(t *testing.T) {
	in := strings.Repeat("0123456789\r\n", 20) + ".\r\nNEXT"
	br := bufio.NewReaderSize(strings.NewReader(in), readBufSize)
	dr := NewDataReader(br, 100, 1000, nil)
	if _, err := io.ReadAll(dr); err != ErrTooBig {
		t.Fatalf("err = %v, want ErrTooBig", err)
	}
	if err := dr.Drain(); err != nil {
		t.Fatalf("Drain = %v, want nil (at the end of data)", err)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "NEXT" {
		t.Fatalf("reader not at end of data: %q left", rest)
	}
}

// endless is a client that never ends its message: line, again and again,
// up to a bound far past any stop limit here, so that a reader that does
// not stop fails the test rather than hanging it.
type endless struct {
	line []byte
	left int
}

func (e *endless) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	p = p[:min(len(p), e.left)]
	n := 0
	for n < len(p) {
		n += copy(p[n:], e.line)
	}
	e.left -= n
	return n, nil
}

// TestDataReaderCut: a body that runs on past the stop limit ends with
// ErrCut after at most the stop limit and one buffer, whether it comes in
// lines or as one endless line, and whatever protocol error came first.
func TestDataReaderCut(t *testing.T) {
	tests := []struct {
		name string
		line string
	}{
		{"lines", "0123456789\r\n"},
		{"endless line", "x"},
		{"bare LF lines", "abc\n"},
		{"lines over 1000", strings.Repeat("y", 1500) + "\r\n"},
	}
	const max, stop = 1000, 5000
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &countingReader{r: &endless{line: []byte(tt.line), left: 1 << 20}}
			br := bufio.NewReaderSize(src, readBufSize)
			dr := NewDataReader(br, max, stop, nil)
			if _, err := io.Copy(io.Discard, dr); err != ErrCut {
				t.Fatalf("err = %v, want ErrCut", err)
			}
			if err := dr.Drain(); err != ErrCut {
				t.Fatalf("Drain = %v, want ErrCut", err)
			}
			if dr.ProtocolError() == nil {
				t.Fatal("no protocol error recorded")
			}
			consumed := src.n - int64(br.Buffered())
			if consumed <= stop || consumed > stop+readBufSize {
				t.Fatalf("consumed %d octets, want in (%d, %d]", consumed, stop, stop+readBufSize)
			}
		})
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// FuzzDataReader checks the smuggling invariant: whatever the bytes, the
// reader either ends exactly after a CRLF.CRLF that is preceded only by
// clean CRLF lines, or refuses the message after exactly such an end, or
// stops (ErrCut) within one buffer past its stop limit; it never reads on
// past the stop limit otherwise, and never panics. max and margin are the
// size limit (0 = none) and the distance from it to the stop limit (0 = no
// stop limit).
func FuzzDataReader(f *testing.F) {
	for _, s := range []string{"a\r\n.\r\n", "a\n.\n", "a\r.\r\n.\r\n", "..x\r\n.\r\nQUIT\r\n", "\r\n.\r\n", ".\r\n"} {
		f.Add([]byte(s), uint16(1<<15), uint16(0))
	}
	f.Add([]byte("0123456789\r\n0123456789\r\n.\r\n"), uint16(10), uint16(100))
	f.Add([]byte("0123456789\r\n0123456789\r\n0123456789\r\n.\r\n"), uint16(10), uint16(15))
	f.Add([]byte(strings.Repeat("z", 100)), uint16(0), uint16(30))
	const bufSize = 16
	f.Fuzz(func(t *testing.T, in []byte, max, margin uint16) {
		stop := int64(0)
		if margin > 0 {
			stop = int64(max) + int64(margin)
		}
		src := bytes.NewReader(in)
		br := bufio.NewReaderSize(src, bufSize)
		dr := NewDataReader(br, int64(max), stop, nil)
		body, err := io.ReadAll(dr)
		drainErr := dr.Drain()
		consumed := int64(len(in) - src.Len() - br.Buffered())
		raw := in[:consumed]
		switch err {
		case nil, ErrBareCR, ErrBareLF, ErrNUL, ErrLineTooLong, ErrTooBig:
			// At the real end of data, and only there.
			if !bytes.HasSuffix(raw, []byte("\r\n.\r\n")) && !(err == nil && bytes.Equal(raw, []byte(".\r\n"))) {
				t.Fatalf("end of data (%v) without CRLF.CRLF: %q", err, raw)
			}
			if drainErr != nil {
				t.Fatalf("Drain = %v at the end of data", drainErr)
			}
			// The stop limit holds: only the final dot line may pass it.
			if stop > 0 && consumed > stop+3 {
				t.Fatalf("read %d octets with stop limit %d", consumed, stop)
			}
			if err == ErrTooBig && (max == 0 || consumed <= int64(max)) {
				t.Fatalf("ErrTooBig after %d octets with limit %d", consumed, max)
			}
			if err != nil {
				break
			}
			if max > 0 && consumed > int64(max)+3 {
				t.Fatalf("accepted %d octets with limit %d", consumed, max)
			}
			// No bare CR or LF survived in the body.
			if bytes.Count(body, []byte("\n")) != bytes.Count(body, []byte("\r\n")) ||
				bytes.Count(body, []byte("\r")) != bytes.Count(body, []byte("\r\n")) {
				t.Fatalf("bare CR/LF passed: %q", body)
			}
			if bytes.IndexByte(body, 0) >= 0 {
				t.Fatalf("NUL passed: %q", body)
			}
		case ErrCut:
			if stop == 0 || consumed <= stop || consumed > stop+bufSize {
				t.Fatalf("cut after %d octets with stop limit %d", consumed, stop)
			}
			if drainErr != ErrCut {
				t.Fatalf("Drain = %v after a cut, want ErrCut", drainErr)
			}
		case io.ErrUnexpectedEOF:
			if drainErr != err {
				t.Fatalf("Drain = %v after %v", drainErr, err)
			}
			// The last, unfinished segment is taken from the buffer
			// before EOF is known.
			if stop > 0 && consumed > stop+bufSize {
				t.Fatalf("read %d octets with stop limit %d", consumed, stop)
			}
		default:
			t.Fatalf("unexpected error %v", err)
		}
	})
}

func BenchmarkDataReader(b *testing.B) {
	line := strings.Repeat("x", 76) + "\r\n"
	msg := strings.Repeat(line, 64<<10/len(line)) + ".\r\n"
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	src := strings.NewReader(msg)
	br := bufio.NewReaderSize(src, readBufSize)
	buf := make([]byte, 32<<10)
	for b.Loop() {
		src.Reset(msg)
		br.Reset(src)
		dr := NewDataReader(br, 0, 0, nil)
		for {
			_, err := dr.Read(buf)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}
