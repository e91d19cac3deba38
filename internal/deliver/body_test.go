package deliver

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/textproto"
	"strings"
	"testing"
	"testing/iotest"
)

func TestCopyDotStuffed(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ".\r\n"},
		{"a\r\n", "a\r\n.\r\n"},
		{"a", "a\r\n.\r\n"},
		{".\r\n", "..\r\n.\r\n"},
		{".a\r\n.b\r\nc.\r\n", "..a\r\n..b\r\nc.\r\n.\r\n"},
		{"bare\nlf\n", "bare\r\nlf\r\n.\r\n"},
		{"x\r\n.\n", "x\r\n..\r\n.\r\n"},
		{"cr\ronly\r\n", "cr\r\nonly\r\n.\r\n"},
		{"a\r.\r\n", "a\r\n..\r\n.\r\n"},
		{"a\r", "a\r\n.\r\n"},
		{"a\r\r\n", "a\r\n\r\n.\r\n"},
		{"\r", "\r\n.\r\n"},
		{"\r\n\r\n", "\r\n\r\n.\r\n"},
	}
	for _, tt := range tests {
		for _, wrap := range []func(io.Reader) io.Reader{func(r io.Reader) io.Reader { return r }, iotest.OneByteReader} {
			var out bytes.Buffer
			w := bufio.NewWriter(&out)
			if err := copyDotStuffed(w, wrap(strings.NewReader(tt.in))); err != nil {
				t.Fatal(err)
			}
			w.Flush()
			if out.String() != tt.want {
				t.Errorf("copyDotStuffed(%q) = %q, want %q", tt.in, out.String(), tt.want)
			}
		}
	}
}

// Lines longer than the read buffer are split in chunks; neither a split
// CRLF nor a dot at a chunk boundary may be mistaken for a line start.
func TestCopyDotStuffedLongLines(t *testing.T) {
	long := strings.Repeat("x", 32<<10-1)
	in := long + "\r\n." + long + ".\r\n"
	want := long + "\r\n.." + long + ".\r\n.\r\n"
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	if err := copyDotStuffed(w, strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	if out.String() != want {
		t.Errorf("long lines mangled (got %d octets, want %d)", out.Len(), len(want))
	}
}

func TestCopyUnixLines(t *testing.T) {
	long := strings.Repeat("y", 32<<10-1)
	tests := []struct{ in, want string }{
		{"", ""},
		{"a\r\nb\r\n", "a\nb\n"},
		{"a\nb", "a\nb"},
		{"lone\rcr\r\n", "lone\rcr\n"},
		{"end\r", "end\r"},
		{long + "\r\n", long + "\n"},
		{long + "\r" + "z\r\n", long + "\rz\n"},
	}
	for _, tt := range tests {
		for _, wrap := range []func(io.Reader) io.Reader{func(r io.Reader) io.Reader { return r }, iotest.OneByteReader} {
			var out bytes.Buffer
			if err := copyUnixLines(bufio.NewWriter(&out), wrap(strings.NewReader(tt.in))); err != nil {
				t.Fatal(err)
			}
			if out.String() != tt.want {
				t.Errorf("copyUnixLines(%.30q) = %.30q, want %.30q", tt.in, out.String(), tt.want)
			}
		}
	}
}

func TestCopyErrors(t *testing.T) {
	errRead := errors.New("disk gone")
	r := io.MultiReader(strings.NewReader("a\r\n"), iotest.ErrReader(errRead))
	if err := copyDotStuffed(bufio.NewWriter(io.Discard), r); !errors.Is(err, errRead) {
		t.Errorf("read error: got %v", err)
	}
	errWrite := errors.New("connection reset")
	w := bufio.NewWriterSize(failWriter{errWrite}, 16)
	if err := copyDotStuffed(w, strings.NewReader(strings.Repeat("line\r\n", 1000))); !errors.Is(err, errWrite) {
		t.Errorf("write error: got %v", err)
	}
}

type failWriter struct{ err error }

func (w failWriter) Write([]byte) (int, error) { return 0, w.err }

// benchMessage is a typical 50 KiB message: short header lines, 76-column
// body lines, a few leading dots.
func benchMessage() []byte {
	var b bytes.Buffer
	for i := 0; i < 20; i++ {
		b.WriteString("X-Header-Line: some value that is typical of a header\r\n")
	}
	b.WriteString("\r\n")
	for b.Len() < 50<<10 {
		b.WriteString(strings.Repeat("abcdefghij", 7) + "klmnop\r\n")
		b.WriteString(".starts with a dot\r\n")
	}
	return b.Bytes()
}

func BenchmarkCopyDotStuffed(b *testing.B) {
	msg := benchMessage()
	w := bufio.NewWriterSize(io.Discard, 32<<10)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if err := copyDotStuffed(w, bytes.NewReader(msg)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCopyUnixLines(b *testing.B) {
	msg := benchMessage()
	w := bufio.NewWriterSize(io.Discard, 32<<10)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if err := copyUnixLines(w, bytes.NewReader(msg)); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzCopyDotStuffed checks the DATA encoding against the standard
// library's decoder: whatever the body, net/textproto's DotReader must get
// back exactly its lines, and the end-of-data line must come only at the
// end.
func FuzzCopyDotStuffed(f *testing.F) {
	f.Add("a\r\n.b\r\n")
	f.Add(".\r\n")
	f.Add("x\n.\n..\r\n")
	f.Add("no newline")
	f.Add("\r\r\n.\r")
	f.Fuzz(func(t *testing.T, in string) {
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		if err := copyDotStuffed(w, strings.NewReader(in)); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		wire := out.String()
		if i := strings.Index(wire, "\r\n.\r\n"); i >= 0 && i != len(wire)-5 {
			t.Fatalf("end of data at %d of %d in %q", i, len(wire), wire)
		}
		if strings.HasPrefix(wire, ".\r\n") && wire != ".\r\n" {
			t.Fatalf("end of data at the start of %q", wire)
		}
		got, err := io.ReadAll(textproto.NewReader(bufio.NewReader(strings.NewReader(wire))).DotReader())
		if err != nil {
			t.Fatalf("DotReader: %v on %q", err, wire)
		}
		for i := 0; i < len(wire); i++ {
			if wire[i] == '\r' && (i+1 == len(wire) || wire[i+1] != '\n') || wire[i] == '\n' && (i == 0 || wire[i-1] != '\r') {
				t.Fatalf("bare CR or LF at %d in %q", i, wire)
			}
		}
		// DotReader turns CRLF into LF; the encoder turned bare CR and LF
		// into CRLF and ended an unterminated last line.
		want := strings.ReplaceAll(strings.ReplaceAll(in, "\r\n", "\n"), "\r", "\n")
		if want != "" && !strings.HasSuffix(want, "\n") {
			want += "\n"
		}
		if string(got) != want {
			t.Fatalf("round trip of %q gave %q", want, got)
		}
	})
}
