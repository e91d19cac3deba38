package accessmap

import (
	"strings"
	"testing"
)

func TestParseAction(t *testing.T) {
	tests := []struct {
		in    string
		want  Action
		reply string
	}{
		{"OK", Action{Kind: OK}, ""},
		{"ok", Action{Kind: OK}, ""},
		{"Relay", Action{Kind: Relay}, ""},
		{"DISCARD", Action{Kind: Discard}, ""},
		{"SKIP", Action{Kind: Skip}, ""},
		{"FRIEND", Action{Kind: Friend}, ""},
		{"hater", Action{Kind: Hater}, ""},
		{"REJECT", Action{Kind: Reject, Code: 550, Status: "5.7.1", Text: "Access denied"}, "550 5.7.1 Access denied"},
		{`ERROR:"550 We don't accept mail from spammers"`,
			Action{Kind: Error, Code: 550, Status: "5.0.0", Text: "We don't accept mail from spammers"},
			"550 5.0.0 We don't accept mail from spammers"},
		{"ERROR:550 Spam not accepted", Action{Kind: Error, Code: 550, Status: "5.0.0", Text: "Spam not accepted"}, "550 5.0.0 Spam not accepted"},
		// A 4xx without a status gets class 4 (sendmail would say 5.0.0).
		{"ERROR:450 mailbox full", Action{Kind: Error, Code: 450, Status: "4.0.0", Text: "mailbox full"}, "450 4.0.0 mailbox full"},
		{"ERROR:4.2.2:450 mailbox full", Action{Kind: Error, Code: 450, Status: "4.2.2", Text: "mailbox full"}, "450 4.2.2 mailbox full"},
		{`ERROR:5.7.1:"550 go away"`, Action{Kind: Error, Code: 550, Status: "5.7.1", Text: "go away"}, "550 5.7.1 go away"},
		{`error:"5.7.1:550 go away"`, Action{Kind: Error, Code: 550, Status: "5.7.1", Text: "go away"}, "550 5.7.1 go away"},
		{"ERROR:5.7.1:550", Action{Kind: Error, Code: 550, Status: "5.7.1"}, "550 5.7.1"},
		{`ERROR:"554 5.7.1 go away"`, Action{Kind: Error, Code: 554, Status: "5.7.1", Text: "go away"}, "554 5.7.1 go away"},
		{`ERROR:"451 4.7.1"`, Action{Kind: Error, Code: 451, Status: "4.7.1"}, "451 4.7.1"},
		{"ERROR:5.7.100:554 text: with colon", Action{Kind: Error, Code: 554, Status: "5.7.100", Text: "text: with colon"}, "554 5.7.100 text: with colon"},
		{`"550 any text"`, Action{Kind: Error, Code: 550, Status: "5.0.0", Text: "any text"}, "550 5.0.0 any text"},
		{"421 closing", Action{Kind: Error, Code: 421, Status: "4.0.0", Text: "closing"}, "421 4.0.0 closing"},
		{"QUARANTINE:Mail from suspicious host", Action{Kind: Quarantine, Text: "Mail from suspicious host"}, ""},
	}
	for _, tt := range tests {
		got, err := ParseAction(tt.in)
		if err != nil {
			t.Errorf("ParseAction(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseAction(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if r := got.Reply(); (r == nil) != (tt.reply == "") || r != nil && r.String() != tt.reply {
			t.Errorf("ParseAction(%q).Reply() = %v, want %q", tt.in, r, tt.reply)
		}
	}
}

func TestParseActionErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "unknown action"},
		{"ACCEPT", "unknown action"},
		{"ERROR:", "three-digit code"},
		{"ERROR:go away", "three-digit code"},
		{"ERROR:250 fine", "not 4xx or 5xx"},
		{"ERROR:5500 text", "three-digit code"},
		{"ERROR:2.0.0:550 text", "class 4 or 5"},
		{"ERROR:550 evil\r250 ok", "control character"},
		{"QUARANTINE:", "needs a reason"},
		{"55 text", "three-digit code"},
	}
	for _, tt := range tests {
		_, err := ParseAction(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseAction(%q) error = %v, want one containing %q", tt.in, err, tt.want)
		}
	}
}

func TestRecipientReply(t *testing.T) {
	a, _ := ParseAction("REJECT")
	if got, want := a.RecipientReply().String(), "550 5.2.1 Mailbox disabled for this recipient"; got != want {
		t.Errorf("RecipientReply() = %q, want %q", got, want)
	}
	e, _ := ParseAction("ERROR:5.1.1:550 no such user")
	if got, want := e.RecipientReply().String(), "550 5.1.1 no such user"; got != want {
		t.Errorf("RecipientReply() = %q, want %q", got, want)
	}
}

func TestParseActionAllocs(t *testing.T) {
	for _, v := range []string{"REJECT", "relay", `ERROR:5.7.1:"550 go away"`} {
		if n := testing.AllocsPerRun(100, func() { _, _ = ParseAction(v) }); n != 0 {
			t.Errorf("ParseAction(%q) allocates %v times", v, n)
		}
	}
}
