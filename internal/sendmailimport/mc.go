package sendmailimport

import (
	"fmt"
	"strings"
)

// A statement is one top-level item of a sendmail.mc: a macro call such as
// define(`confX', `v') or FEATURE(`name', `arg'), a bare word such as
// LOCAL_CONFIG, or any other line (raw .cf text after LOCAL_CONFIG).
type statement struct {
	line int      // 1-based line the statement starts on
	name string   // macro name; "" for a line that is not a macro call
	call bool     // name was followed by an argument list
	args []string // arguments with one level of m4 quotes removed
	text string   // the source text, whitespace collapsed, for messages
}

// maxArgs bounds the arguments of one call; no sendmail macro takes more
// than a handful, and a bound keeps hostile input cheap.
const maxArgs = 64

// parseMC splits a sendmail.mc into statements. It understands as much m4
// as sendmail.mc files use: `dnl' and `#' comments, macro calls whose
// arguments are separated by commas and may be quoted with ` and ' (quotes
// nest, and protect commas, parentheses and newlines), and a trailing dnl.
// It does not expand macros: a .mc file is a list of declarations, and the
// ones mxguard can translate are all literal.
func parseMC(src string) ([]statement, error) {
	s := scanner{src: src, line: 1}
	var out []statement
	for {
		s.skipSpace()
		if s.eof() {
			return out, nil
		}
		switch c := s.peek(); {
		case s.word("dnl"), c == '#':
			s.skipLine()
		case isIdentStart(c):
			st, err := s.macro()
			if err != nil {
				return nil, err
			}
			out = append(out, st)
		default:
			start, line := s.pos, s.line
			s.skipLine()
			out = append(out, statement{line: line, text: collapse(src[start:s.pos])})
		}
	}
}

type scanner struct {
	src  string
	pos  int
	line int
}

func (s *scanner) eof() bool  { return s.pos >= len(s.src) }
func (s *scanner) peek() byte { return s.src[s.pos] }

func (s *scanner) advance() {
	if s.src[s.pos] == '\n' {
		s.line++
	}
	s.pos++
}

func (s *scanner) skipSpace() {
	for !s.eof() && isSpace(s.peek()) {
		s.advance()
	}
}

// skipLine moves past the end of the current line.
func (s *scanner) skipLine() {
	i := strings.IndexByte(s.src[s.pos:], '\n')
	if i < 0 {
		s.pos = len(s.src)
		return
	}
	s.pos += i + 1
	s.line++
}

// word reports whether the m4 name w starts at the current position.
func (s *scanner) word(w string) bool {
	rest := s.src[s.pos:]
	return strings.HasPrefix(rest, w) && (len(rest) == len(w) || !isIdent(rest[len(w)]))
}

// macro reads a name and, if a '(' follows at once (as m4 requires), its
// arguments; then a trailing dnl, which ends the statement's line.
func (s *scanner) macro() (statement, error) {
	start, line := s.pos, s.line
	for !s.eof() && isIdent(s.peek()) {
		s.advance()
	}
	st := statement{line: line, name: s.src[start:s.pos]}
	if !s.eof() && s.peek() == '(' {
		st.call = true
		s.advance()
		if err := s.args(&st); err != nil {
			return statement{}, err
		}
	} else {
		// A bare word like LOCAL_CONFIG, or raw .cf text that happens to
		// start with a letter: the statement is the rest of the line.
		if i := strings.IndexByte(s.src[s.pos:], '\n'); i >= 0 {
			s.pos += i
		} else {
			s.pos = len(s.src)
		}
	}
	// A dnl on the same line belongs to the statement.
	end, after := s.pos, *s
	for !s.eof() && (s.peek() == ' ' || s.peek() == '\t') {
		s.advance()
	}
	if !s.eof() && s.word("dnl") {
		s.skipLine()
		end = s.pos
	} else {
		*s = after
	}
	st.text = collapse(s.src[start:end])
	return st, nil
}

// args reads a macro's arguments up to the matching ')'.
func (s *scanner) args(st *statement) error {
	var (
		arg    strings.Builder
		quotes int // depth of `' quoting
		parens int // depth of unquoted parentheses
		lead   = true
	)
	for !s.eof() {
		c := s.peek()
		s.advance()
		switch {
		case c == '`':
			if quotes > 0 {
				arg.WriteByte(c)
			}
			quotes++
			lead = false
			continue
		case c == '\'' && quotes > 0:
			quotes--
			if quotes > 0 {
				arg.WriteByte(c)
			}
			continue
		case quotes > 0:
			arg.WriteByte(c)
			continue
		case lead && isSpace(c):
			// m4 drops unquoted leading white space of an argument.
			continue
		case c == '(':
			parens++
		case c == ')' && parens > 0:
			parens--
		case c == ')':
			st.args = append(st.args, arg.String())
			return nil
		case c == ',' && parens == 0:
			if len(st.args) == maxArgs {
				return fmt.Errorf("line %d: %s has more than %d arguments", st.line, st.name, maxArgs)
			}
			st.args = append(st.args, arg.String())
			arg.Reset()
			lead = true
			continue
		}
		arg.WriteByte(c)
		lead = false
	}
	if quotes > 0 {
		return fmt.Errorf("line %d: %s(: quote ` is never closed with '", st.line, st.name)
	}
	return fmt.Errorf("line %d: %s(: missing )", st.line, st.name)
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}
func isIdentStart(c byte) bool { return c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isIdent(c byte) bool      { return isIdentStart(c) || '0' <= c && c <= '9' }

// collapse turns a source excerpt into one line: runs of white space become
// one space and control characters are dropped, so that the text is safe
// inside a TOML comment and a log line.
func collapse(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	space := false
	for _, r := range strings.TrimSpace(s) {
		switch {
		case r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\f' || r == '\v':
			space = true
		case r < 0x20 || r == 0x7f:
			// dropped
		default:
			if space && b.Len() > 0 {
				b.WriteByte(' ')
			}
			space = false
			b.WriteRune(r)
		}
	}
	return b.String()
}
