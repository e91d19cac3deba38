package deliver

import (
	"bufio"
	"io"
)

// copyDotStuffed copies a message body to an SMTP DATA stream: every line
// ends in CRLF (a bare LF becomes CRLF), a line that begins with "." gets a
// second one (RFC 5321 §4.5.2), and the stream ends with the lone "." line.
// The spool holds CRLF text already; the conversion is there so that a
// bare LF can never turn into an accidental end-of-data downstream.
func copyDotStuffed(w *bufio.Writer, r io.Reader) error {
	br := bufio.NewReaderSize(r, 32<<10)
	atStart, prev := true, byte('\n')
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			if atStart && chunk[0] == '.' {
				w.WriteByte('.')
			}
			if chunk[len(chunk)-1] == '\n' {
				before := prev
				if len(chunk) > 1 {
					before = chunk[len(chunk)-2]
				}
				w.Write(chunk[:len(chunk)-1])
				if before != '\r' {
					w.WriteByte('\r')
				}
				w.WriteByte('\n')
				atStart = true
			} else {
				w.Write(chunk)
				atStart = false
			}
			prev = chunk[len(chunk)-1]
			// bufio.Writer keeps its first error; stop reading once the
			// connection has failed.
			if _, werr := w.Write(nil); werr != nil {
				return werr
			}
		}
		switch err {
		case nil, bufio.ErrBufferFull:
			continue
		case io.EOF:
			if !atStart {
				w.WriteString("\r\n")
			}
			_, err := w.WriteString(".\r\n")
			return err
		default:
			return err
		}
	}
}

// copyUnixLines copies a CRLF message body into a Maildir file, whose
// convention (qmail's, followed by Dovecot and mutt) is LF line endings.
func copyUnixLines(w *bufio.Writer, r io.Reader) error {
	br := bufio.NewReaderSize(r, 32<<10)
	pendingCR := false // a CR ended the previous chunk; its fate depends on the next byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			if pendingCR && chunk[0] != '\n' {
				w.WriteByte('\r')
			}
			pendingCR = false
			switch n := len(chunk); {
			case n >= 2 && chunk[n-1] == '\n' && chunk[n-2] == '\r':
				w.Write(chunk[:n-2])
				w.WriteByte('\n')
			case chunk[n-1] == '\r':
				w.Write(chunk[:n-1])
				pendingCR = true
			default:
				w.Write(chunk)
			}
			if _, werr := w.Write(nil); werr != nil {
				return werr
			}
		}
		switch err {
		case nil, bufio.ErrBufferFull:
			continue
		case io.EOF:
			if pendingCR {
				w.WriteByte('\r')
			}
			return w.Flush()
		default:
			return err
		}
	}
}
