package config

import (
	"strings"
)

// SpecTables renders the schema as the Markdown tables of docs/SPEC.md,
// one per section.
func SpecTables() string {
	var b strings.Builder
	for _, sec := range Sections {
		if sec == "" {
			b.WriteString("Top level:\n\n")
		} else {
			b.WriteString("`[" + sec + "]`:\n\n")
		}
		relay := sec == "timeouts"
		if relay {
			b.WriteString("| key | default | relay client when 0 | sendmail | meaning |\n|---|---|---|---|---|\n")
		} else {
			b.WriteString("| key | default | sendmail | meaning |\n|---|---|---|---|\n")
		}
		for i := range schema {
			k := &schema[i]
			if s, name := k.Section(); s == sec {
				cells := []string{"`" + name + "`", cell(k.DefaultText())}
				if relay {
					cells = append(cells, cell(k.RelayDefault))
				}
				cells = append(cells, cell(k.Sendmail), cell(k.Doc))
				b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// cell escapes a table cell: literals in code spans, pipes escaped.
func cell(s string) string {
	if s == "" {
		return ""
	}
	s = strings.ReplaceAll(s, "|", `\|`)
	if strings.HasPrefix(s, `"`) || strings.HasPrefix(s, "[") || s == "true" || s == "false" || isNumber(s) {
		return "`" + s + "`"
	}
	return s
}

func isNumber(s string) bool {
	s = strings.TrimPrefix(s, "-")
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
