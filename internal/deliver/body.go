package deliver

import (
	"bufio"
	"bytes"
	"io"
)

// copyDotStuffed copies a message body to an SMTP DATA stream: every line
// ends in CRLF, a line that begins with "." gets a second one (RFC 5321
// §4.5.2), and the stream ends with the lone "." line. The spool holds
// CRLF text already (the server refuses bare CR and LF); a bare CR or LF is
// still turned into CRLF here, so that no byte sequence in a body can look
// like an end of data to a lenient downstream (SMTP smuggling).
func copyDotStuffed(w *bufio.Writer, r io.Reader) error {
	br := bufio.NewReaderSize(r, 32<<10)
	d := dotStuffer{w: w, atStart: true}
	for {
		chunk, err := br.ReadSlice('\n')
		d.write(chunk)
		// bufio.Writer keeps its first error; stop reading once the
		// connection has failed.
		if _, werr := w.Write(nil); werr != nil {
			return werr
		}
		switch err {
		case nil, bufio.ErrBufferFull:
			continue
		case io.EOF:
			if d.cr || !d.atStart {
				w.WriteString("\r\n")
			}
			_, err := w.WriteString(".\r\n")
			return err
		default:
			return err
		}
	}
}

// dotStuffer is the state of copyDotStuffed between chunks.
type dotStuffer struct {
	w       *bufio.Writer
	atStart bool // the next byte starts a line
	cr      bool // the last chunk ended in a CR, not yet written
}

func (d *dotStuffer) write(p []byte) {
	for len(p) > 0 {
		if d.cr {
			d.cr = false
			d.w.WriteString("\r\n")
			d.atStart = true
			if p[0] == '\n' {
				p = p[1:]
				continue
			}
		}
		if d.atStart && p[0] == '.' {
			d.w.WriteByte('.')
		}
		d.atStart = false
		seg := p
		lf := bytes.IndexByte(p, '\n')
		if lf >= 0 {
			seg = p[:lf]
		}
		cr := bytes.IndexByte(seg, '\r')
		switch {
		case cr < 0 && lf < 0: // part of a line
			d.w.Write(seg)
			return
		case cr < 0 || cr == lf-1: // a line ending in LF or CRLF
			d.w.Write(p[:lf-boolInt(cr >= 0)])
			d.w.WriteString("\r\n")
			d.atStart = true
			p = p[lf+1:]
		case cr == len(p)-1: // a CR that may begin a CRLF in the next chunk
			d.w.Write(p[:cr])
			d.cr = true
			return
		default: // a bare CR
			d.w.Write(p[:cr])
			d.w.WriteString("\r\n")
			d.atStart = true
			p = p[cr+1:]
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
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
