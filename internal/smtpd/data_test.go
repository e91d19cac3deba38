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
			dr := NewDataReader(br, 0, nil)
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

func TestDataReaderSizeLimit(t *testing.T) {
	in := strings.Repeat("0123456789\r\n", 20) + ".\r\nNEXT"
	br := bufio.NewReaderSize(strings.NewReader(in), readBufSize)
	dr := NewDataReader(br, 100, nil)
	if _, err := io.ReadAll(dr); err != ErrTooBig {
		t.Fatalf("err = %v, want ErrTooBig", err)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "NEXT" {
		t.Fatalf("reader not at end of data: %q left", rest)
	}
}

// FuzzDataReader checks the smuggling invariant: whatever the bytes, the
// reader either ends exactly after a CRLF.CRLF that is preceded only by
// clean CRLF lines, or refuses the message, and never panics.
func FuzzDataReader(f *testing.F) {
	for _, s := range []string{"a\r\n.\r\n", "a\n.\n", "a\r.\r\n.\r\n", "..x\r\n.\r\nQUIT\r\n", "\r\n.\r\n", ".\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		src := bytes.NewReader(in)
		br := bufio.NewReaderSize(src, 16)
		dr := NewDataReader(br, 1<<20, nil)
		body, err := io.ReadAll(dr)
		consumed := len(in) - src.Len() - br.Buffered()
		switch err {
		case nil:
			raw := in[:consumed]
			if !bytes.HasSuffix(raw, []byte("\r\n.\r\n")) && !bytes.Equal(raw, []byte(".\r\n")) {
				t.Fatalf("clean end without CRLF.CRLF: %q", raw)
			}
			// No bare CR or LF survived in the body.
			if bytes.Count(body, []byte("\n")) != bytes.Count(body, []byte("\r\n")) ||
				bytes.Count(body, []byte("\r")) != bytes.Count(body, []byte("\r\n")) {
				t.Fatalf("bare CR/LF passed: %q", body)
			}
			if bytes.IndexByte(body, 0) >= 0 {
				t.Fatalf("NUL passed: %q", body)
			}
		case io.ErrUnexpectedEOF, ErrBareCR, ErrBareLF, ErrNUL, ErrLineTooLong, ErrTooBig:
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
		dr := NewDataReader(br, 0, nil)
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
