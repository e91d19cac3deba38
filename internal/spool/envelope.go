package spool

import "time"

// Envelope is everything the spool keeps about a message besides its body:
// the SMTP envelope, where it came from, and per-recipient delivery state.
// It is written once at Commit and rewritten (durably) by Update as delivery
// progresses.
type Envelope struct {
	ID       string    // spool-assigned, unique, safe as a file name
	From     string    // reverse-path without brackets; "" is the null sender
	Rcpts    []Rcpt    // forward-paths in RCPT order
	Received time.Time // when the message was accepted (the 250)
	ClientIP string    // textual IP of the SMTP client
	Helo     string    // HELO/EHLO argument
	SMTPUTF8 bool      // MAIL FROM carried SMTPUTF8
	Size     int64     // body size in octets, set by Commit
	Attempts int       // delivery attempts so far
	NextTry  time.Time // earliest next attempt; zero = now
}

// Rcpt is one recipient and what delivery has made of it so far.
type Rcpt struct {
	Addr   string // forward-path without brackets
	Done   bool   // delivered or bounced: never try again
	Status string // last SMTP reply or error text, for logs and DSNs
}
