package config

import (
	"bytes"
	"slices"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// keyLines maps every key in a TOML document to the line it is defined on.
//
// go-toml's decoder, which turns the document into values, keeps no
// positions, so the document is walked a second time with go-toml's
// (unstable) parser just for them. Keys are named as keyName names them:
// "limits.greet_pause", and "listen[1]" for the second element of an array
// when that element sits on a line of its own. The document must already
// have been decoded without error.
func keyLines(data []byte) map[string]int {
	newlines := make([]int, 0, bytes.Count(data, []byte{'\n'}))
	for i, c := range data {
		if c == '\n' {
			newlines = append(newlines, i)
		}
	}
	w := lineWalker{newlines: newlines, lines: make(map[string]int)}

	var p unstable.Parser
	p.Reset(data)
	var table []string
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			it := e.Key()
			table, _ = w.key(nil, &it)
		case unstable.KeyValue:
			w.keyValue(table, e)
		}
	}
	return w.lines
}

type lineWalker struct {
	newlines []int // offsets of '\n' in the document
	lines    map[string]int
}

// line returns the 1-based line of a byte offset.
func (w *lineWalker) line(offset uint32) int {
	n, _ := slices.BinarySearch(w.newlines, int(offset))
	return n + 1
}

// key appends the parts of a (possibly dotted) key to prefix, recording the
// line of each intermediate table the first time it appears, and returns
// the full key and its line.
func (w *lineWalker) key(prefix []string, it *unstable.Iterator) ([]string, int) {
	path := slices.Clone(prefix)
	line := 0
	for it.Next() {
		n := it.Node()
		path = append(path, string(n.Data))
		line = w.line(n.Raw.Offset)
		w.record(keyName(path), line)
	}
	return path, line
}

func (w *lineWalker) record(name string, line int) {
	if _, ok := w.lines[name]; !ok {
		w.lines[name] = line
	}
}

func (w *lineWalker) keyValue(table []string, kv *unstable.Node) {
	it := kv.Key()
	path, line := w.key(table, &it)
	w.value(path, kv.Value(), line)
}

func (w *lineWalker) value(path []string, v *unstable.Node, line int) {
	switch v.Kind {
	case unstable.InlineTable:
		it := v.Children()
		for it.Next() {
			w.keyValue(path, it.Node())
		}
	case unstable.Array:
		it := v.Children()
		for i := 0; it.Next(); i++ {
			n := it.Node()
			if n.Kind == unstable.Comment {
				i--
				continue
			}
			elemLine := line
			if n.Raw.Length > 0 {
				elemLine = w.line(n.Raw.Offset)
			}
			elem := keyName(path) + "[" + strconv.Itoa(i) + "]"
			w.record(elem, elemLine)
		}
	}
}

// keyName joins key parts with dots, quoting any part that is not a bare
// TOML key so that the name is unambiguous and can be pasted back into the
// file.
func keyName(parts []string) string {
	var b strings.Builder
	for i, p := range parts {
		if i > 0 {
			b.WriteByte('.')
		}
		if isBareKey(p) {
			b.WriteString(p)
		} else {
			b.WriteString(strconv.Quote(p))
		}
	}
	return b.String()
}

func isBareKey(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
