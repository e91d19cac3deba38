package dnsbl

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// FuzzParseSites reads a list of entries, one a line, and checks that it is
// either refused with one error per bad entry, naming it, or read into
// sites that print back as entries that read the same. The seed corpus in
// testdata holds the documentation's examples, Postfix's ip_match test
// patterns and each kind of error.
func FuzzParseSites(f *testing.F) {
	f.Fuzz(func(t *testing.T, text string) {
		entries := strings.Split(text, "\n")
		sites, err := ParseSites(entries)
		if err != nil {
			if sites != nil {
				t.Fatalf("sites %v returned with error %v", sites, err)
			}
			var errs []error
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				errs = j.Unwrap()
			} else {
				errs = []error{err}
			}
			for _, e := range errs {
				var se *SiteError
				if !errors.As(e, &se) || se.Index < 0 || se.Index >= len(entries) || entries[se.Index] != se.Entry {
					t.Fatalf("error %v does not name an entry", e)
				}
			}
			return
		}
		if len(sites) != len(entries) {
			t.Fatalf("%d entries read as %d sites", len(entries), len(sites))
		}
		printed := make([]string, len(sites))
		for i, s := range sites {
			if s.Domain != strings.ToLower(s.Domain) || strings.HasSuffix(s.Domain, ".") || len(s.Domain) > maxDomainLen {
				t.Fatalf("entry %q: domain %q not normalised", entries[i], s.Domain)
			}
			printed[i] = s.String()
		}
		again, err := ParseSites(printed)
		if err != nil {
			t.Fatalf("%q read back from %q: %v", printed, entries, err)
		}
		if !slices.Equal(again, sites) {
			t.Fatalf("%q read as %v, printed as %q, read back as %v", entries, sites, printed, again)
		}
	})
}
