package loadgen

import (
	"errors"
	"testing"
)

func TestFirstReply(t *testing.T) {
	for _, tt := range []struct {
		in       string
		code     int
		complete bool
		bad      bool
	}{
		{in: "421 4.3.2 Connection rate limit exceeded.\r\n", code: 421, complete: true},
		{in: "220 mx ESMTP\r\n", code: 220, complete: true},
		{in: "554\r\n", code: 554, complete: true},
		{in: "554\n", code: 554, complete: true},
		{in: "220-mx ESMTP\r\n220 second\r\n", code: 220, complete: true},
		{in: "220-mx ESMTP\r\n"},              // more lines to come
		{in: "421 4.3.2 no newli"},            // the line is not whole yet
		{in: ""},                              // nothing yet
		{in: "hello there\r\n", bad: true},    // not a reply
		{in: "22\r\n", bad: true},             // too short
		{in: "220-a\r\n421 b\r\n", bad: true}, // codes differ between lines
	} {
		code, complete, err := firstReply([]byte(tt.in))
		if tt.bad {
			if !errors.Is(err, errProtocol) {
				t.Errorf("%q: %d %v %v, want a protocol error", tt.in, code, complete, err)
			}
			continue
		}
		if err != nil || complete != tt.complete || (complete && code != tt.code) {
			t.Errorf("%q: %d %v %v, want %d %v", tt.in, code, complete, err, tt.code, tt.complete)
		}
	}
}
