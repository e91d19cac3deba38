package config

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
)

// Error is one problem in a configuration file.
type Error struct {
	File string // as given to Load or Parse; may be ""
	Line int    // 1-based; 0 when the problem has no single line
	Key  string // dotted key, e.g. "limits.greet_pause"; "" for syntax errors outside a key
	Msg  string
}

// Error formats e as "FILE:LINE: key: msg", leaving out the parts that are
// unknown, so that editors and terminals can jump to the line.
func (e Error) Error() string {
	var b strings.Builder
	prefix(&b, e.File, e.Line)
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

func prefix(b *strings.Builder, file string, line int) {
	switch {
	case file != "" && line > 0:
		b.WriteString(file)
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(line))
		b.WriteString(": ")
	case file != "":
		b.WriteString(file)
		b.WriteString(": ")
	case line > 0:
		b.WriteString("line ")
		b.WriteString(strconv.Itoa(line))
		b.WriteString(": ")
	}
}

// Errors is every problem found in one configuration file, sorted by line.
type Errors []Error

// Error returns one line per problem.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find a single Error in the list.
func (es Errors) Unwrap() []error {
	errs := make([]error, len(es))
	for i, e := range es {
		errs[i] = e
	}
	return errs
}

func (es Errors) sort() {
	slices.SortStableFunc(es, func(a, b Error) int {
		return cmp.Compare(a.Line, b.Line)
	})
}
