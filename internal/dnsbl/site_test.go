package dnsbl

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// mustFilter parses a filter or fails the test.
func mustFilter(t testing.TB, s string) Filter {
	t.Helper()
	f, err := parseFilter(s)
	if err != nil {
		t.Fatalf("parseFilter(%q): %v", s, err)
	}
	return f
}

func TestParseSites(t *testing.T) {
	tests := []struct {
		entry string
		want  Site
	}{
		{"zen.spamhaus.org*2", Site{Domain: "zen.spamhaus.org", Weight: 2}},
		{"bl.spamcop.net*1", Site{Domain: "bl.spamcop.net", Weight: 1}},
		{"bl.spamcop.net", Site{Domain: "bl.spamcop.net", Weight: 1}},
		{"list.dnswl.org=127.0.[0..255].[1..3]*-5", Site{Domain: "list.dnswl.org", Filter: mustFilter(t, "127.0.[0..255].[1..3]"), Weight: -5}},
		{"b.barracudacentral.org=127.0.0.2*7", Site{Domain: "b.barracudacentral.org", Filter: mustFilter(t, "127.0.0.2"), Weight: 7}},
		{"bl.example=127.0.0.[2;3;4]", Site{Domain: "bl.example", Filter: mustFilter(t, "127.0.0.[2..4]"), Weight: 1}},
		{"Zen.SpamHaus.ORG", Site{Domain: "zen.spamhaus.org", Weight: 1}},
		{"bl.example=[127.0.0.2]", Site{Domain: "bl.example", Filter: mustFilter(t, "127.0.0.2"), Weight: 1}},
		{"bl.example=[[1;2].3.4.5]", Site{Domain: "bl.example", Filter: mustFilter(t, "[1..2].3.4.5"), Weight: 1}},
		{"bl.example*+3", Site{Domain: "bl.example", Weight: 3}},
		{"bl.example*0", Site{Domain: "bl.example", Weight: 0}},
		{"bl.example*-2147483648", Site{Domain: "bl.example", Weight: -2147483648}},
		{"key_1.zen.dq.spamhaus.net", Site{Domain: "key_1.zen.dq.spamhaus.net", Weight: 1}},
		{"0.example", Site{Domain: "0.example", Weight: 1}},
		{"dnsbl", Site{Domain: "dnsbl", Weight: 1}},
		{"a-b.example=127.0.0.0002", Site{Domain: "a-b.example", Filter: mustFilter(t, "127.0.0.2"), Weight: 1}},
		{strings.Repeat("a", 63) + ".example", Site{Domain: strings.Repeat("a", 63) + ".example", Weight: 1}},
		{strings.Repeat("a.", 94) + "b", Site{Domain: strings.Repeat("a.", 94) + "b", Weight: 1}}, // 189 characters
	}
	for _, tt := range tests {
		got, err := ParseSites([]string{tt.entry})
		if err != nil {
			t.Errorf("ParseSites(%q): %v", tt.entry, err)
			continue
		}
		if len(got) != 1 || got[0] != tt.want {
			t.Errorf("ParseSites(%q) = %+v, want %+v", tt.entry, got, tt.want)
		}
	}
}

func TestParseSitesErrors(t *testing.T) {
	tests := []struct {
		entry string
		want  string // the error, after `dnsbl: site "<entry>": `
	}{
		{"", `bad domain "": empty`},
		{"*2", `bad domain "": empty`},
		{"=127.0.0.2", `bad domain "": empty`},
		{"zen.spamhaus.org*", `bad weight "": want an integer`},
		{"zen.spamhaus.org*x", `bad weight "x": want an integer`},
		{"zen.spamhaus.org*2.5", `bad weight "2.5": want an integer`},
		{"zen.spamhaus.org* 2", `bad weight " 2": want an integer`},
		{"zen.spamhaus.org*2*3", `bad weight "2*3": want an integer`},
		{"zen.spamhaus.org*2=127.0.0.2", `bad weight "2=127.0.0.2": want an integer`},
		{"zen.spamhaus.org*2147483648", `weight "2147483648" out of range`},
		{"zen.spamhaus.org*-99999999999", `weight "-99999999999" out of range`},
		{"zen.spamhaus.org=", `bad filter "": empty address pattern`},
		{"bl.example=127.0.0.300", `bad filter "127.0.0.300": need decimal number 0..255 or "[" at "127.0.0.>300<"`},
		{"bl.example=127.0.3000.1", `bad filter "127.0.3000.1": need decimal number 0..255 or "[" at "127.0.>3000<.1"`},
		{"bl.example=127.0.0.", `bad filter "127.0.0.": need decimal number 0..255 or "[" at "127.0.0.><"`},
		{"bl.example=127.0.0", `bad filter "127.0.0": need "." at "127.0.0><"`},
		{"bl.example=a", `bad filter "a": need decimal number 0..255 or "[" at ">a<"`},
		{"bl.example=127.0.0;4", `bad filter "127.0.0;4": need "." at "127.0.0>;<4"`},
		{"bl.example=127.0.[].2", `bad filter "127.0.[].2": need decimal number 0..255 at "127.0.[>]<.2"`},
		{"bl.example=127.0.[.2", `bad filter "127.0.[.2": need decimal number 0..255 at "127.0.[>.<2"`},
		{"bl.example=127.0.].2", `bad filter "127.0.].2": need decimal number 0..255 or "[" at "127.0.>]<.2"`},
		{"bl.example=127.0.[1-255].2", `bad filter "127.0.[1-255].2": need ";" or "]" at "127.0.[1>-<255].2"`},
		{"bl.example=127.0.[1..127.128..255].2", `bad filter "127.0.[1..127.128..255].2": need ";" or "]" at "127.0.[1..127>.<128..255].2"`},
		{"bl.example=127.0.0.[4..1]", `bad filter "127.0.0.[4..1]": numeric range error at "127.0.0.[4..>1<]"`},
		{"bl.example=127.0.0.[4.1]", `bad filter "127.0.0.[4.1]": numeric range error at "127.0.0.[4.>1<]"`},
		{"bl.example=127.0.0.[4.x]", `bad filter "127.0.0.[4.x]": numeric range error at "127.0.0.[4.>x<]"`},
		{"bl.example=127.0.0.[x]", `bad filter "127.0.0.[x]": need decimal number 0..255 at "127.0.0.[>x<]"`},
		{"bl.example=127.0.0.[2", `bad filter "127.0.0.[2": need ";" or "]" at "127.0.0.[2><"`},
		{"bl.example=127.0.0.[256]", `bad filter "127.0.0.[256]": need decimal number 0..255 at "127.0.0.[>256<]"`},
		{"bl.example=127.0.0.2x", `bad filter "127.0.0.2x": garbage after pattern at "127.0.0.2>x<"`},
		{"bl.example=127.0.0.2.5", `bad filter "127.0.0.2.5": garbage after pattern at "127.0.0.2>.<5"`},
		{"bl.example=[127.0.0.2", `bad filter "[127.0.0.2": missing "]" character`},
		{"bl.example=[[1;2].3.4.5", `bad filter "[[1;2].3.4.5": missing "]" character`},
		{"bl.example=1;2].3.4.5", `bad filter "1;2].3.4.5": need "." at "1>;<2].3.4.5"`},
		{"bl.example=::1", `bad filter "::1": need decimal number 0..255 or "[" at ">:<:1"`},
		{"bl.example=127.0.0.2\n", `bad filter "127.0.0.2\n": garbage after pattern at "127.0.0.2>\n<"`},
		{"zen.spamhaus.org.", `bad domain "zen.spamhaus.org.": trailing "."; write the domain without it`},
		{".zen.spamhaus.org", `bad domain ".zen.spamhaus.org": empty label (a leading "." or "..")`},
		{"zen..spamhaus.org", `bad domain "zen..spamhaus.org": empty label (a leading "." or "..")`},
		{".", `bad domain ".": trailing "."; write the domain without it`},
		{"-zen.example", `bad domain "-zen.example": a label starts or ends with "-"`},
		{"zen-.example", `bad domain "zen-.example": a label starts or ends with "-"`},
		{"zen.example-", `bad domain "zen.example-": a label starts or ends with "-"`},
		{"zen example", `bad domain "zen example": invalid character ' '`},
		{"zen.spamhaus.org,bl.spamcop.net", `bad domain "zen.spamhaus.org,bl.spamcop.net": invalid character ','`},
		{"bücher.example", `bad domain "bücher.example": invalid character 'ü'`},
		{"bl\xff.example", `bad domain "bl\xff.example": invalid character '�'`},
		{"127.0.0.1", `bad domain "127.0.0.1": all numeric`},
		{strings.Repeat("a", 64) + ".example", `bad domain "` + strings.Repeat("a", 64) + `.example": label longer than 63 characters`},
		{strings.Repeat("a.", 95), `bad domain "` + strings.Repeat("a.", 95) + `": trailing "."; write the domain without it`},
		{strings.Repeat("a.", 95) + "b", `bad domain "` + strings.Repeat("a.", 95) + `b": longer than 189 characters, which leaves no room for the 64 of a reversed IPv6 address`},
	}
	for _, tt := range tests {
		sites, err := ParseSites([]string{"bl.spamcop.net", tt.entry})
		want := fmt.Sprintf("dnsbl: site %q: %s", tt.entry, tt.want)
		if err == nil || err.Error() != want {
			t.Errorf("ParseSites(%q) = %v\n want error %s", tt.entry, err, want)
		}
		if sites != nil {
			t.Errorf("ParseSites(%q) returned sites with its error: %v", tt.entry, sites)
		}
		var se *SiteError
		if !errors.As(err, &se) || se.Index != 1 || se.Entry != tt.entry {
			t.Errorf("ParseSites(%q): error %#v, want a *SiteError for entry 1", tt.entry, se)
		}
	}
}

func TestParseSitesDuplicates(t *testing.T) {
	// The same domain with other filters is postscreen's way of weighing
	// a list's answers differently.
	if _, err := ParseSites([]string{
		"zen.spamhaus.org=127.0.0.[10;11]*8", "zen.spamhaus.org=127.0.0.[4..7]*6",
		"zen.spamhaus.org=127.0.0.3*4", "zen.spamhaus.org=127.0.0.2*3", "zen.spamhaus.org",
	}); err != nil {
		t.Errorf("one domain, several filters: %v", err)
	}

	_, err := ParseSites([]string{
		"zen.spamhaus.org*2",
		"bl.example=127.0.0.2",
		"ZEN.spamhaus.org*3",            // same domain, no filter
		"bl.example=[127.0.0.[2]]*5",    // the same filter written otherwise
		"bl.example=127.0.0.[2;3]",      // another filter: fine
		"bl.example=127.0.0.[3;2]*-1",   // the same as the one before
		"zen.spamhaus.org=127.0.0.0..2", // and a syntax error, reported too
	})
	want := []string{
		`dnsbl: site "ZEN.spamhaus.org*3": same list and filter as "zen.spamhaus.org*2"`,
		`dnsbl: site "bl.example=[127.0.0.[2]]*5": same list and filter as "bl.example=127.0.0.2"`,
		`dnsbl: site "bl.example=127.0.0.[3;2]*-1": same list and filter as "bl.example=127.0.0.[2;3]"`,
		`dnsbl: site "zen.spamhaus.org=127.0.0.0..2": bad filter "127.0.0.0..2": garbage after pattern at "127.0.0.0>.<.2"`,
	}
	if err == nil || err.Error() != strings.Join(want, "\n") {
		t.Errorf("got %v\nwant\n%s", err, strings.Join(want, "\n"))
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok || len(joined.Unwrap()) != len(want) {
		t.Fatalf("error %T is not one error per entry", err)
	}
	for i, idx := range []int{2, 3, 5, 6} {
		if se, ok := joined.Unwrap()[i].(*SiteError); !ok || se.Index != idx {
			t.Errorf("error %d: %#v, want a *SiteError for entry %d", i, joined.Unwrap()[i], idx)
		}
	}

	if sites, err := ParseSites(nil); sites == nil && err != nil || len(sites) != 0 {
		t.Errorf("ParseSites(nil) = %v, %v", sites, err)
	}
}

// TestFilterMatch runs the cases of Postfix's ip_match.in/.ref, and those
// of the postscreen documentation.
func TestFilterMatch(t *testing.T) {
	tests := []struct {
		filter    string
		canonical string
		yes, no   []string
	}{
		{"1.2.3.4", "1.2.3.4", []string{"1.2.3.4"}, []string{"1.2.3.5", "4.3.2.1"}},
		{"1.2.[3].4", "1.2.3.4", []string{"1.2.3.4"}, []string{"1.2.4.4"}},
		{"1.2.[1..127;128..255].5", "1.2.[1..255].5", []string{"1.2.1.5", "1.2.255.5"}, []string{"1.2.0.5", "1.2.1.6"}},
		{"1.2.3.[4]", "1.2.3.4", []string{"1.2.3.4"}, nil},
		{"1.2.[3..11].5", "1.2.[3..11].5", []string{"1.2.3.5", "1.2.11.5"}, []string{"1.2.2.5", "1.2.12.5", "1.2.11.6"}},
		{"1.2.[3;5;7;9;11].5", "1.2.[3;5;7;9;11].5", []string{"1.2.3.5", "1.2.11.5"}, []string{"1.2.2.5", "1.2.4.5", "1.2.12.5", "1.2.11.6"}},
		{"[1;2].3.4.5", "[1..2].3.4.5", []string{"1.3.4.5", "2.3.4.5"}, []string{"3.3.4.5"}},
		{"[[1;2].3.4.5]", "[1..2].3.4.5", []string{"1.3.4.5", "2.3.4.5"}, []string{"3.3.4.5"}},
		{"127.0.[0..255].[1..3]", "127.0.[0..255].[1..3]", []string{"127.0.0.1", "127.0.15.3", "127.0.255.2"}, []string{"127.0.5.0", "127.0.5.4", "127.1.5.2"}},
		{"127.0.0.[2;3;4]", "127.0.0.[2..4]", []string{"127.0.0.2", "127.0.0.4"}, []string{"127.0.0.1", "127.0.0.5"}},
		{"[0..255].[0..255].[0..255].[0..255]", "[0..255].[0..255].[0..255].[0..255]", []string{"0.0.0.0", "255.255.255.255"}, []string{"::1", "::ffff:1.2.3.4"}},
		{"127.0.0.[0;2;4..6;255]", "127.0.0.[0;2;4..6;255]", []string{"127.0.0.0", "127.0.0.5", "127.0.0.255"}, []string{"127.0.0.1", "127.0.0.3", "127.0.0.7"}},
	}
	for _, tt := range tests {
		f := mustFilter(t, tt.filter)
		if got := f.String(); got != tt.canonical {
			t.Errorf("%s: String() = %q, want %q", tt.filter, got, tt.canonical)
		}
		if again := mustFilter(t, f.String()); again != f {
			t.Errorf("%s: String() %q reads back as another filter", tt.filter, f.String())
		}
		for _, a := range tt.yes {
			if !f.Match(netip.MustParseAddr(a)) {
				t.Errorf("%s does not match %s", tt.filter, a)
			}
		}
		for _, a := range tt.no {
			if f.Match(netip.MustParseAddr(a)) {
				t.Errorf("%s matches %s", tt.filter, a)
			}
		}
	}
}

func TestSiteString(t *testing.T) {
	for entry, want := range map[string]string{
		"zen.spamhaus.org":                        "zen.spamhaus.org",
		"zen.spamhaus.org*1":                      "zen.spamhaus.org",
		"ZEN.spamhaus.org*+2":                     "zen.spamhaus.org*2",
		"list.dnswl.org=127.0.[0..255].[1..3]*-5": "list.dnswl.org=127.0.[0..255].[1..3]*-5",
		"bl.example=[127.0.0.[3;2;4]]*0":          "bl.example=127.0.0.[2..4]*0",
	} {
		sites, err := ParseSites([]string{entry})
		if err != nil {
			t.Fatal(err)
		}
		if got := sites[0].String(); got != want {
			t.Errorf("%q: String() = %q, want %q", entry, got, want)
		}
	}
}
