// Package spool is mxguard's durable message queue: the place a message
// must reach before the server may answer 250 to DATA.
//
// # Guarantees
//
// When [Writer.Commit] returns nil, the message (envelope and body) is on
// disk and survives a crash of the process, of the kernel, or of the
// power: a small message has been appended to the log and the log
// fdatasynced; a large one has been written to a temporary file, that file
// fsynced, renamed into the queue directory, and the queue directory
// fsynced. A crash at any earlier point leaves at most a file in tmp/,
// which [Open] removes, or an incomplete record at the end of the log,
// which Open recognises by its length and checksums and drops: neither is
// ever visible as a message. [Spool.Update] and [Spool.Remove] are durable
// in the same way, and atomic: a crash leaves the old state or the new one.
//
// # Layout
//
//	<dir>/lock            flock(2)ed while open: one process per spool
//	<dir>/tmp/            files being written; emptied by Open
//	<dir>/log/<N>.seg     log segments: small messages and their done records
//	<dir>/queue/<ID>      a message in a file of its own: body, envelope, trailer
//	<dir>/queue/<ID>.st   its delivery state, once Update has run
//	<dir>/corrupt/        what could not be read, kept for the operator
//
// # Small messages: the log
//
// A message whose body is at most 64 KiB is held in memory while DATA is
// read and committed as one record appended to the current log segment:
// a 32-byte header (the segment's salt, the kind, both lengths and three
// CRC-32C checksums: body, envelope, header), the body, then the envelope
// as JSON (segment.go has the details). Concurrent Commits share one
// write and one fdatasync: a single committer goroutine takes every record
// waiting, writes them with one pwrite, fdatasyncs the segment once and
// only then wakes each waiter, whose session may then send its 250. While
// it syncs, the next batch gathers, so the batch follows the load with no
// timer and no added latency when idle. The log's fsyncs per message fall
// as sessions are added; with 50 sessions of 1 KiB messages it measured
// about 0.04 per message, against 1.1 for the file per message below
// (BenchmarkCommit1KiB; BENCHMARKS.md has the runs).
//
// A message leaves the log by a done record, a record holding only its ID,
// appended the same way by Remove (delivered or bounced) or by Update: a
// message that needs a second attempt is moved to a file of its own, with
// its new state, and a done record appended, because it may wait for days
// and the log should not hold its segment on disk all that time. The file
// is durable before the done record is written; a crash in between leaves
// the message in both, and Open keeps the file, which is the newer.
//
// A segment is started (its header written and fsynced, the log directory
// fsynced, before any record goes in) when the current one reaches 4 MiB,
// and deleted once no message in it is left and it is not the current one.
// One that still holds done records for messages in an older segment
// which is still there (a message whose first attempt is taking long)
// appends those done records again, to the current segment, before it
// goes: otherwise one waiting message would hold every later segment on
// disk, each through the done records of the one before. Deletions are
// made durable one at a time, oldest first.
//
// Open reads every segment in order and rebuilds the index of the messages
// in the log: a message record adds one, a done record takes it away. An
// incomplete record at the end of a segment (a crash during its write,
// before its fdatasync returned, so before any 250 for it) is dropped with
// a warning naming the file and offset. Damage elsewhere (a record whose
// checksums do not match, with good records after it) is logged as an
// error naming the file and offset; the scan goes on at the next good
// record, and the segment is linked into corrupt/. A segment whose header
// cannot be read is moved to corrupt/ whole, with an error. The next good
// record is found by the segment's salt, 8 random bytes drawn for each
// segment and repeated at the start of each record: a message body is
// whatever the sender chose, and without the salt a record planted in one
// could be taken for the spool's own.
//
// # Large messages: a file each
//
// A body that outgrows 64 KiB is streamed to a temporary file through a
// pooled 32 KiB buffer (never held in memory, whatever its size) and
// becomes one file: the body as received, then the envelope as JSON, then
// a fixed 32-byte trailer with both lengths, CRC-32C checksums of body,
// envelope and trailer, and a magic string (format.go). One file means
// one rename makes the whole message visible, so there is no state in
// which an envelope exists without its body. The envelope follows the
// body because the body is streamed to disk before its length is known;
// the trailer at the very end is the first thing a truncation destroys,
// so a damaged file is reported (ErrCorrupt), never half read.
//
// Delivery state changes after the message is queued, but rewriting a
// message of up to tens of megabytes for each attempt would be wasteful, so
// Update writes the whole envelope, in the same record format with an empty
// body, to a separate state file (temporary file, fsync, rename, directory
// fsync). Envelope prefers the state file. Remove deletes the message before
// its state file: a crash in between leaves an orphan state file, which Open
// deletes, and not a message that has lost its state and would be delivered
// again to recipients that already have it.
//
// Each session writes and fsyncs its own file, concurrently with the
// others, and hands the rename to a second committer goroutine, which
// takes every rename, state rewrite and removal waiting, applies them,
// fsyncs the queue directory once and wakes their waiters. Measured
// (BenchmarkFsync* in fsync_bench_test.go, ext4 on a virtio disk, 2 cores,
// shared): creating, writing and fsyncing a 1 KiB file costs 0.40-0.50 ms,
// concurrent ones share only part of that (1.2-1.5 times cheaper per file),
// and appending 20 KiB to a log with one fdatasync 0.18 ms: which is why
// small messages, most mail, go to the log.
//
// Message IDs are 24 characters of base32 ("extended hex" alphabet, so they
// sort like the values they encode) over 8 bytes of Unix nanoseconds and 7
// random bytes: they sort by acceptance time, are unique across restarts and
// across processes, and are safe as file names.
package spool
