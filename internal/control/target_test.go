package control

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

// mxLine is one line as mxguard's slog TextHandler writes it.
func mxLine(msg string, attrs ...any) string {
	var b bytes.Buffer
	slog.New(slog.NewTextHandler(&b, nil)).Info(msg, attrs...)
	return strings.TrimSuffix(b.String(), "\n")
}

// mxJSON is the same line from slog's JSONHandler.
func mxJSON(msg string, attrs ...any) string {
	var b bytes.Buffer
	slog.New(slog.NewJSONHandler(&b, nil)).Info(msg, attrs...)
	return strings.TrimSuffix(b.String(), "\n")
}

// mxNoTime is mxLine from a handler that leaves the time out, as one
// writing to journald may.
func mxNoTime(msg string, attrs ...any) string {
	var b bytes.Buffer
	drop := func(groups []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey && len(groups) == 0 {
			return slog.Attr{}
		}
		return a
	}
	slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{ReplaceAttr: drop})).Log(context.Background(), slog.LevelInfo, msg, attrs...)
	return strings.TrimSuffix(b.String(), "\n")
}

const journald = "Nov 29 00:00:00 mx mxguard[123]: "

func TestParseTargetAccepts(t *testing.T) {
	tests := []struct {
		name, in, want, desc string // desc: Target.String(), when checked
	}{
		{"address", "192.0.2.7", "192.0.2.7/32", "client 192.0.2.7 (given as an address)"},
		{"prefix", "192.0.2.0/24", "192.0.2.0/24", "network 192.0.2.0/24 (given as a CIDR prefix)"},
		{"prefix with host bits", "192.0.2.9/24", "192.0.2.0/24", ""},
		{"IPv6", "2001:db8::1", "2001:db8::1/128", ""},
		{"IPv4-mapped", "::ffff:192.0.2.1", "192.0.2.1/32", ""},
		{"spaces around", "  192.0.2.7\t", "192.0.2.7/32", ""},

		{"mxguard text", mxLine("rejecting connection from host5.adsl.alicedsl.de [127.0.0.5]: ratecontrol: 6 connections in 1m0s, limit 5",
			"ip", "127.0.0.5", "reason", "ratecontrol", "reply", "421 4.3.2 Connection rate limit exceeded."),
			"127.0.0.5/32", "client 127.0.0.5 (ip= field of an mxguard log line, reason=ratecontrol)"},
		{"mxguard text, journald prefix", journald + mxLine("x", "ip", "192.0.2.5", "reason", "relay"), "192.0.2.5/32", ""},
		{"mxguard text, syslog priority", "<22>" + journald + mxLine("x", "ip", "192.0.2.5"), "192.0.2.5/32",
			"client 192.0.2.5 (ip= field of an mxguard log line, no reason= field)"},
		{"mxguard text, ISO prefix", "2026-11-29T00:00:00.123+01:00 mx mxguard[9]: " + mxLine("x", "ip", "2001:db8::5"), "2001:db8::5/128", ""},
		{"mxguard text, no time", mxNoTime("x", "ip", "192.0.2.5", "reason", "pregreet"), "192.0.2.5/32", ""},
		{"mxguard text, session attrs first", mxLine("timeout waiting for helo from unknown [192.0.2.6]", "session", "a1", "ip", "192.0.2.6", "reason", "timeout", "phase", "helo"), "192.0.2.6/32", ""},
		{"mxguard JSON", mxJSON("rejecting connection", "ip", "192.0.2.5", "reason", "ratecontrol"), "192.0.2.5/32",
			`client 192.0.2.5 ("ip" field of an mxguard JSON log line, reason=ratecontrol)`},
		{"mxguard JSON, journald prefix", journald + mxJSON("x", "ip", "192.0.2.5"), "192.0.2.5/32", ""},

		// sendmail's own lines, as fail2ban's test logs keep them.
		{"check_rcpt", "Feb 23 21:36:14 petermurray sm-mta[22248]: s1NLaDQT022248: ruleset=check_rcpt, arg1=<dautareuk2@hotmail.it>, relay=int0.client.access.azadnet.net [80.253.155.119] (may be forged), reject=550 5.7.1 <dautareuk2@hotmail.it>... Relaying denied. IP name possibly forged [80.253.155.119]",
			"80.253.155.119/32", "client 80.253.155.119 (relay= field of a sendmail log line, ruleset=check_rcpt, reject=550 5.7.1 <dautareuk2@hotmail.it>... Relaying denied. IP name possibly forged [80.253.155.119])"},
		{"check_rcpt, no name", "Feb 23 07:57:28 petermurray sm-mta[6519]: s1N7vR47006519: ruleset=check_rcpt, arg1=<camila.pinto@camilopinto.pt>, relay=[2.180.185.27], reject=553 5.1.8 <camila.pinto@camilopinto.pt>... Domain of sender address camila.pinto@andrewweitzman.com does not exist", "2.180.185.27/32", ""},
		{"check_relay", "Feb 24 01:46:44 petermurray sm-mta[24422]: ruleset=check_relay, arg1=leased-line-54-82.telecom.by, arg2=217.21.54.82, relay=leased-line-54-82.telecom.by [217.21.54.82], reject=421 4.3.2 Connection rate limit exceeded.",
			"217.21.54.82/32", "client 217.21.54.82 (relay= field of a sendmail log line, ruleset=check_relay, reject=421 4.3.2 Connection rate limit exceeded.)"},
		{"check_relay, bracketed name", "Feb 19 18:01:50 batman sm-mta[78152]: ruleset=check_relay, arg1=[196.213.73.146], arg2=196.213.73.146, relay=[196.213.73.146], reject=421 4.3.2 Connection rate limit exceeded.", "196.213.73.146/32", ""},
		{"FreeBSD tag", "Feb 25 03:01:10 kismet sm-acceptingconnections[27713]: s1P819mk027713: ruleset=check_rcpt, arg1=<asservnew@freemailhost.ru>, relay=128-68-136-133.broadband.corbina.ru [128.68.136.133], reject=550 5.7.1 <asservnew@freemailhost.ru>... Relaying denied. Proper authentication required.", "128.68.136.133/32", ""},
		{"from=", "Nov  3 11:35:30 Microsoft sendmail[26254]: rA37ZTSC026254: from=<davaojk25@domain.com>, size=0, class=0, nrcpts=0, bodytype=8BITMIME, proto=ESMTP, daemon=MTA, relay=163.23.32.95.dsl-dynamic.vsi.ru [95.32.23.163]", "95.32.23.163/32", ""},
		{"pregreet", "Mar 29 21:14:07 nifelhei sm-mta[4211]: n2TKE7Zq004211: rejecting commands from host9.adsl.alicedsl.de [127.0.0.9] due to pre-greeting traffic",
			"127.0.0.9/32", "client 127.0.0.9 (client field of a sendmail log line, pre-greeting traffic)"},
		{"pregreet, no name", "Feb 27 10:53:06 batman sm-mta[44307]: s1R9r60D044307: rejecting commands from  [209.15.212.253] due to pre-greeting traffic after 0 seconds", "209.15.212.253/32", ""},
		{"pregreet, no prefix", "rejecting commands from unknown [IPv6:2001:db8::5] due to pre-greeting traffic", "2001:db8::5/128", ""},
		{"tcpwrappers", "Mar 29 10:00:00 mx sendmail[123]: tcpwrappers (host5.adsl.alicedsl.de, 127.0.0.5) rejection", "127.0.0.5/32", ""},
		{"tcpwrappers, no prefix", "tcpwrappers (unknown, 2001:db8::7) rejection", "2001:db8::7/128", ""},
		{"did not issue", "Mar  7 15:04:37 s192-168-0-1 sm-mta[18624]: v27K4Vj8018624: some-host-24.example.org [192.0.2.195] (may be forged) did not issue MAIL/EXPN/VRFY/ETRN during connection to MSP-v4", "192.0.2.195/32", ""},
		{"did not issue, IPv6", "Mar 29 22:51:46 server sm-mta[50438]: 06QDQnNf050438: example.com [IPv6:2001:DB8::1] did not issue MAIL/EXPN/VRFY/ETRN during connection to IPv6", "2001:db8::1/128", ""},
		{"SMTP attack", "Feb 24 13:00:17 kismet sm-acceptingconnections[1499]: s1OHxxSn001499: 192.241.70.95.dsl.static.turk.net [95.70.241.192] (may be forged): possible SMTP attack: command=AUTH, count=6", "95.70.241.192/32", ""},
		{"EXPN", "Feb 22 14:02:44 batman sm-mta[4030]: s1MD2hsd004030: rrcs-24-73-201-194.se.biz.rr.com [24.73.201.194]: EXPN root [rejected]", "24.73.201.194/32", ""},
		{"AUTH failure", "Feb 25 04:02:27 relay1 sendmail[16664]: 06I02CNi016764: AUTH failure (LOGIN): authentication failure (-13) SASL(-13): authentication failure: checkpass failed, user=user@example.com, relay=example.com [192.0.2.3] (may be forged)", "192.0.2.3/32", ""},
		{"lost input", "Mar 29 10:00:00 mx sm-mta[123]: n2TKE7Zq004211: lost input channel from ident@mail.example.org [192.0.2.8] to MTA after rcpt", "192.0.2.8/32", ""},
		{"STARTTLS", "Mar 29 10:00:00 mx sm-mta[123]: n2TKE7Zq004211: STARTTLS=server, relay=mail.example.org [192.0.2.8], version=TLSv1.3, verify=NO, cipher=TLS_AES_256_GCM_SHA384, bits=256/256", "192.0.2.8/32", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTarget(tt.in)
			if err != nil || got.Prefix.String() != tt.want {
				t.Fatalf("ParseTarget(%q) = %v, %v; want %s", tt.in, got.Prefix, err, tt.want)
			}
			if tt.desc != "" && got.String() != tt.desc {
				t.Errorf("described as %q, want %q", got.String(), tt.desc)
			}
		})
	}
}

// TestParseTargetInjection: a client's own text (HELO, MAIL FROM, RCPT TO,
// a header, a Message-Id) lands in the log line next to the address the
// server wrote for it. Each line here carries such text naming 10.66.66.66;
// ParseTarget must give the real client (want) or refuse the line (want ""),
// and never the injected address.
func TestParseTargetInjection(t *testing.T) {
	const real = "127.0.0.77"
	const sm = "Mar 29 10:00:00 mx sm-mta[123]: n2TKE7Zq004211: "
	tests := []struct {
		name, in, want, err string
	}{
		{"RCPT TO local part", mxLine("relaying denied for <ip=10.66.66.66@evil.test> from unknown [127.0.0.77]", "ip", real, "reason", "relay"), real, ""},
		{"MAIL FROM local part", mxLine("rejecting sender <ip=10.66.66.66@evil.test> from unknown [127.0.0.77]", "ip", real, "reason", "access", "key", "From:evil.test"), real, ""},
		{"quoted local part with spaces", mxLine("relaying denied for <x ip=10.66.66.66 y@evil.test> from unknown [127.0.0.77]", "ip", real, "reason", "relay"), real, ""},
		{"quote breaking out", mxLine(`relaying denied for <x" ip=10.66.66.66 reason="y@evil.test> from unknown [127.0.0.77]`, "ip", real, "reason", "relay"), real, ""},
		{"backslash and quote", mxLine(`relaying denied for <x\" ip=10.66.66.66 \@evil.test>`, "ip", real), real, ""},
		{"HELO", mxLine("accepted", "helo", "[10.66.66.66] ip=10.66.66.66", "ip", real), real, ""},
		{"bare value", mxLine("accepted", "id", "x", "ip", real, "from", "ip:10.66.66.66@evil.test"), real, ""},
		{"quoted Subject", mxLine("accepted", "subject", `Re: "ip=10.66.66.66" relay=[10.66.66.66]`, "ip", real), real, ""},
		{"IPv6 literal", mxLine("relaying denied for <x@[IPv6:2001:db8::66]> from unknown [127.0.0.77]", "ip", real, "reason", "relay"), real, ""},
		{"fake sendmail tag", mxLine("relaying denied for <x sendmail[1]: rejecting commands from [10.66.66.66] due to pre-greeting traffic@x>", "ip", real), real, ""},
		{"fake sendmail tag, journald", journald + mxLine("relaying denied for <x sm-mta[1]: tcpwrappers (x, 10.66.66.66) rejection>", "ip", real), real, ""},
		{"JSON", mxJSON(`relaying denied for <"ip":"10.66.66.66"@evil.test>`, "ip", real, "from", `", "ip": "10.66.66.66`), real, ""},
		{"JSON with a text prefix", "Nov 29 mx mxguard: " + mxJSON("x", "ip", real), real, ""},

		{"two ip= fields", mxLine("x", "ip", real) + " ip=10.66.66.66", "", "2 ip= fields"},
		{"two ip= fields, one quoted", mxLine("x", "ip", "10.66.66.66") + ` "ip"=127.0.0.77`, "", "2 ip= fields"},
		{"JSON, two ip", `{"msg":"x","ip":"127.0.0.77","ip":"10.66.66.66"}`, "", `2 "ip" fields`},
		{"JSON, escaped key", `{"msg":"x","ip":"127.0.0.77","\u0069p":"10.66.66.66"}`, "", `2 "ip" fields`},
		{"JSON, nested ip only", `{"msg":"x","g":{"ip":"10.66.66.66"}}`, "", `no "ip" field`},
		{"JSON, trailing text", mxJSON("x", "ip", real) + ` {"ip":"10.66.66.66"}`, "", "more text after"},
		{"JSON, ip not a string", `{"msg":"x","ip":["10.66.66.66"]}`, "", "not a string"},
		{"no ip= field", mxLine("relaying denied for <ip=10.66.66.66@evil.test>", "reason", "relay"), "", "no ip= field"},
		{"ip= only in the message", `time=2026-11-29T00:00:00Z level=INFO msg="ip=10.66.66.66"`, "", "no ip= field"},
		{"quotes lost to the shell", `time=2026-11-29T00:00:00Z level=INFO msg=relaying denied for <ip=10.66.66.66@evil.test> ip=127.0.0.77 reason=relay`, "", "not an mxguard log line"},
		{"quote not closed", `time=2026-11-29T00:00:00Z level=INFO msg="x ip=10.66.66.66`, "", "not an mxguard log line"},
		{"no msg", "ip=10.66.66.66", "", "first field"},
		{"not slog", "level=INFO something ip=10.66.66.66", "", "not an mxguard log line"},
		{"ip not an address", mxLine("x", "ip", "10.66.66.66.evil.test"), "", "not an IP address"},
		{"foreign logfmt tail", "Mar 29 10:00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[127.0.0.77]: 554 5.7.1 <x@y>: Relay access denied; from=<a@b> to=<x@y> proto=ESMTP helo=<h time=1 msg=x ip=10.66.66.66>", "", "first field"},
		{"bare address in text", "McAfee: blocked ICMP ping from 10.66.66.66 to port 990", "", "not an mxguard or sendmail log line"},
		{"bracketed address in text", "something [10.66.66.66] happened", "", "not an mxguard or sendmail log line"},
		{"two lines", mxLine("x", "ip", real) + "\n" + mxLine("x", "ip", "10.66.66.66"), "", "control character"},

		{"sendmail forged from=", sm + `from=<"x, relay=[10.66.66.66],"@evil.test>, size=1, class=0, nrcpts=1, msgid=<a@b>, proto=ESMTP, daemon=MTA, relay=host.example [127.0.0.77]`, "", "ambiguous"},
		{"sendmail forged msgid", sm + `from=<a@evil.test>, size=1, class=0, nrcpts=1, msgid=<x relay=[10.66.66.66] y>, proto=ESMTP, daemon=MTA, relay=[127.0.0.77]`, "", "ambiguous"},
		{"sendmail forged, unparsable", sm + `from=<relay=x@evil.test>, size=1, class=0, nrcpts=1, proto=ESMTP, daemon=MTA, relay=[127.0.0.77]`, "", "ambiguous"},
		{"sendmail forged, same address", sm + `from=<"relay=[127.0.0.77],"@evil.test>, size=1, relay=[127.0.0.77]`, real, ""},
		{"sendmail AUTH user", "Feb 25 04:02:28 relay1 sendmail[16665]: 06I02CNi016765: AUTH failure (LOGIN): authentication failure (-13) SASL(-13): authentication failure: checkpass failed, user=criminal, relay=[10.66.66.66], relay=[127.0.0.77] (may be forged)", "", "ambiguous"},
		{"sendmail check_rcpt arg1 and reject", sm + `ruleset=check_rcpt, arg1=<"a, relay=[10.66.66.66], b"@x>, relay=[127.0.0.77], reject=550 5.7.1 <"a, relay=[10.66.66.66], b"@x>... Relaying denied`, "", "ambiguous"},
		{"sendmail quoted Subject", sm + `ruleset=check_subject, arg1="ip=10.66.66.66 relay=[10.66.66.66], x", relay=host.example [127.0.0.77], reject=553 5.7.0 spam`, "", "ambiguous"},
		{"sendmail IPv6 literal", sm + `from=<x@[IPv6:2001:db8::66]>, size=1, class=0, nrcpts=1, proto=ESMTP, daemon=MTA, relay=host.example [127.0.0.77]`, real, ""},
		{"sendmail relay in User unknown", sm + `<relay=[10.66.66.66]@x>... User unknown`, "", "names no client"},
		{"sendmail relay= twice, no client", "May 1 0:00:00 sm-mta[0]: from=relay=relay=", "", "ambiguous"}, // found by FuzzReadLogs: it panicked
		{"sendmail client form in User unknown", sm + `<x [10.66.66.66]: possible SMTP attack: command=AUTH>... User unknown`, "", "names no client"},
		{"sendmail pregreet later in the line", sm + `<x@y>... User unknown; rejecting commands from [10.66.66.66] due to pre-greeting traffic`, "", "names no client"},
		{"sendmail EXPN argument", sm + `[127.0.0.77]: EXPN [10.66.66.66] [rejected]`, real, ""},
		{"sendmail to= line", sm + `to=<x@y>, delay=00:00:01, mailer=esmtp, pri=1, relay=mx.example [10.66.66.66], dsn=2.0.0, stat=Sent`, "", "to= line"},
		{"sendmail local submission", sm + `from=root, size=1, class=0, nrcpts=1, relay=root@localhost`, "", "names no client address"},
		{"sendmail check_relay disagreeing", "Feb 24 01:46:44 mx sm-mta[1]: ruleset=check_relay, arg1=x, arg2=10.66.66.66, relay=[127.0.0.77], reject=421 4.3.2 x", "", "disagree"},
		{"sendmail STARTTLS as client", sm + `STARTTLS=client, relay=mx.example., version=TLSv1.3, verify=OK`, "", "names no client"},
		{"sendmail, no prefix, User unknown", `n2TKE7Zq004211: <x sendmail[1]: rejecting commands from [10.66.66.66] due to pre-greeting traffic>... User unknown`, "", "not an mxguard or sendmail log line"},
		{"postfix", "Mar 29 10:00:00 mx postfix/smtpd[1]: connect from unknown[10.66.66.66]", "", "not an mxguard or sendmail log line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTarget(tt.in)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("ParseTarget(%q) = %v, want an error", tt.in, got)
				}
				if !strings.Contains(err.Error(), tt.err) {
					t.Errorf("error %q, want one saying %q", err, tt.err)
				}
				return
			}
			if err != nil || got.Prefix.String() != tt.want+"/32" {
				t.Fatalf("ParseTarget(%q) = %v, %v; want %s", tt.in, got.Prefix, err, tt.want)
			}
		})
	}
}

func TestParseTargetRefusesNonsense(t *testing.T) {
	for _, bad := range []string{"", "   ", "no address here", "mail.example.com", "10:30:00", "192.0.2.300", "fe80::1%eth0/64",
		strings.Repeat("x=y ", maxLine)} {
		if p, err := ParseTarget(bad); err == nil {
			t.Errorf("ParseTarget(%.40q) = %v, want an error", bad, p)
		}
	}
}

func TestParsePrefix(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7": "192.0.2.7/32", "192.0.2.9/24": "192.0.2.0/24", "::ffff:192.0.2.1": "192.0.2.1/32",
		"fe80::1%eth0": "fe80::1/128", "2001:db8::/32": "2001:db8::/32",
	} {
		if p, err := ParsePrefix(in); err != nil || p.String() != want {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	// The socket and the trust files take an address, never a line.
	for _, bad := range []string{"[192.0.2.7]", "ip=192.0.2.7", "192.0.2.7 # x", "host [192.0.2.7]", ""} {
		if p, err := ParsePrefix(bad); err == nil {
			t.Errorf("ParsePrefix(%q) = %v, want an error", bad, p)
		}
	}
}

// FuzzParseTargetInjection puts arbitrary client text into the places a
// client's words reach in mxguard's and sendmail's lines: the result is the
// real client or a refusal, never another address.
func FuzzParseTargetInjection(f *testing.F) {
	for _, s := range []string{"ip=10.66.66.66", `x" ip=10.66.66.66 msg="`, "relay=[10.66.66.66],", `", "ip":"10.66.66.66`,
		"x [10.66.66.66]: possible SMTP attack: command=AUTH", "\u00a0ip=10.66.66.66", `\" ip=10.66.66.66 \"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ParseTarget(s) // never panics
		const real = "127.0.0.77/32"
		for _, line := range []string{
			mxLine("relaying denied for <"+s+"> from unknown [127.0.0.77]", "ip", "127.0.0.77", "reason", "relay", "from", s),
			journald + mxLine(s, "ip", "127.0.0.77"),
			mxJSON("relaying denied for <"+s+">", "ip", "127.0.0.77", "from", s),
		} {
			got, err := ParseTarget(line)
			if err != nil || got.Prefix.String() != real {
				t.Fatalf("ParseTarget(%q) = %v, %v; want %s", line, got.Prefix, err, real)
			}
		}
		for _, line := range []string{
			"Mar 29 10:00:00 mx sm-mta[1]: q1: ruleset=check_rcpt, arg1=<" + s + ">, relay=host [127.0.0.77], reject=550 5.7.1 <" + s + ">... Relaying denied",
			"Mar 29 10:00:00 mx sm-mta[1]: q1: from=<" + s + ">, size=1, msgid=<" + s + ">, relay=[127.0.0.77]",
		} {
			if got, err := ParseTarget(line); err == nil && got.Prefix.String() != real {
				t.Fatalf("ParseTarget(%q) = %v, want %s or an error", line, got.Prefix, real)
			}
		}
		line := "Mar 29 10:00:00 mx sm-mta[1]: q1: <" + s + ">... User unknown"
		if got, err := ParseTarget(line); err == nil {
			t.Fatalf("ParseTarget(%q) = %v, want an error: the line names no client", line, got.Prefix)
		}
	})
}
