package suggest

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// edit replaces del lines of a file, from the 0-based line at, with ins
// (del 0: inserts before line at; at = the number of lines: appends).
type edit struct {
	at, del int
	ins     []string
}

// diffContext is the lines of context around each change, as diff -u.
const diffContext = 3

// splitLines splits a file into lines without their newlines, and says
// whether the last one had one (an empty file has none and "needs" none).
func splitLines(b []byte) (lines []string, endsNL bool) {
	s := string(b)
	if s == "" {
		return nil, true
	}
	endsNL = strings.HasSuffix(s, "\n")
	s = strings.TrimSuffix(s, "\n")
	return strings.Split(s, "\n"), endsNL
}

// writeDiff writes the unified diff that turns old into old with edits
// applied, for the file at path; exists false means the file is new
// ("--- /dev/null"). Edits must not overlap; those at one place apply in
// the order given. Nothing is written when there are no edits.
func writeDiff(w io.Writer, path string, old []byte, exists bool, edits []edit) error {
	if len(edits) == 0 {
		return nil
	}
	lines, endsNL := splitLines(old)
	if !endsNL && len(lines) > 0 {
		// The last line gets its newline, so that lines can follow it.
		last := len(lines) - 1
		if i := slices.IndexFunc(edits, func(e edit) bool { return e.at == last && e.del == 1 }); i < 0 {
			edits = append(edits, edit{at: last, del: 1, ins: []string{lines[last]}})
		}
	}
	// At one place, insertions come before a change of the line there.
	slices.SortStableFunc(edits, func(a, b edit) int {
		if a.at != b.at {
			return a.at - b.at
		}
		return a.del - b.del
	})
	for i := 1; i < len(edits); i++ {
		if p := edits[i-1]; edits[i].at < p.at+p.del {
			return fmt.Errorf("%s: two changes of line %d", path, edits[i].at+1)
		}
	}
	from := path
	if !exists {
		from = "/dev/null"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "--- %s\n+++ %s\n", from, path)
	offset := 0 // lines the hunks so far added, less those they removed
	for start := 0; start < len(edits); {
		// A hunk: the edits whose contexts touch.
		end := start + 1
		for end < len(edits) && edits[end].at-(edits[end-1].at+edits[end-1].del) <= 2*diffContext {
			end++
		}
		group := edits[start:end]
		lo := max(group[0].at-diffContext, 0)
		last := group[len(group)-1]
		hi := min(last.at+last.del+diffContext, len(lines))
		var body strings.Builder
		oldN, newN := 0, 0
		line := func(prefix byte, i int, text string) {
			body.WriteByte(prefix)
			body.WriteString(text)
			body.WriteByte('\n')
			if i == len(lines)-1 && !endsNL && prefix == '-' {
				body.WriteString("\\ No newline at end of file\n")
			}
		}
		i := lo
		for _, e := range group {
			for ; i < e.at; i++ {
				line(' ', i, lines[i])
				oldN++
				newN++
			}
			for ; i < e.at+e.del; i++ {
				line('-', i, lines[i])
				oldN++
			}
			for _, s := range e.ins {
				line('+', -1, s)
				newN++
			}
		}
		for ; i < hi; i++ {
			line(' ', i, lines[i])
			oldN++
			newN++
		}
		fmt.Fprintf(&b, "@@ -%s +%s @@\n%s", hunkRange(lo, oldN), hunkRange(lo+offset, newN), body.String())
		offset += newN - oldN
		start = end
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// hunkRange is a hunk's start and length as diff -u writes them: 1-based,
// and for an empty range the line before it.
func hunkRange(start, n int) string {
	if n == 0 {
		return fmt.Sprintf("%d,0", start)
	}
	if n == 1 {
		return fmt.Sprint(start + 1)
	}
	return fmt.Sprintf("%d,%d", start+1, n)
}
