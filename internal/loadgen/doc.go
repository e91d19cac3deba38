// Package loadgen drives SMTP servers hard, for mxguard's benchmarks and for
// comparing mxguard with Postfix on the same machine. It has four modes:
//
//   - [Send] delivers a fixed number of messages over concurrent SMTP
//     sessions and measures throughput and latency, per message (MAIL to the
//     reply after the final dot) and per session (connect to the QUIT
//     reply). Optionally it then waits until the messages show up in a
//     Maildir, for "accepted until delivered" throughput.
//   - [Flood] connects again and again for a while and counts the first
//     reply of each connection by code, which shows how a server sheds a
//     connection flood (421, 550, 554) and how fast. Either at a fixed rate
//     (open loop: every server faces the same offered load, as a botnet
//     does not slow down for a slow server) or as fast as a set of dialers
//     is answered (closed loop).
//   - [Idle] opens many connections, keeps them open and silent, and
//     measures what each one costs the server in memory, read from /proc.
//   - [Abuse] has many sessions each send input that never ends (a header
//     line, DATA, a command line) and measures how much each got to send
//     before the server cut it off, how long after passing the server's
//     limit that was, and the CPU time the server spent, read from /proc.
//
// Clients can spread their source addresses over a range of loopback
// addresses ([ParseAddrs]), round robin, because one source address offers
// only about 28000 ephemeral ports towards one server port, and a flood of
// short connections runs out of them within seconds.
//
// Every count is exact: each message [Send] claims ends in exactly one of
// accepted, temporary failure, permanent failure or error, so the four add
// up to the number asked for. Latency percentiles are computed from every
// sample rather than from a histogram: the samples are bounded by the
// message count (8 bytes each), so exact figures cost little and need no
// library.
//
// Replies are read with [net/textproto.Reader.ReadResponse], which handles
// multi-line replies; the package has no reply parser of its own.
package loadgen
