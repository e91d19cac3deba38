// Package spool is mxguard's durable message queue: the place a message
// must reach before the server may answer 250 to DATA.
//
// # Guarantees
//
// When [Writer.Commit] returns nil, the message (envelope and body) has
// been written to a temporary file, that file fsynced, renamed into the
// queue directory, and the queue directory fsynced: it survives a crash of
// the process, of the kernel, or of the power. A crash at any earlier point
// leaves at most a file in tmp/, which is never visible as a message and
// which [Open] removes. [Spool.Update] and [Spool.Remove] are durable in the
// same way, and atomic: a crash leaves the old state or the new one.
//
// # Layout
//
//	<dir>/lock            flock(2)ed while open: one process per spool
//	<dir>/tmp/            files being written; emptied by Open
//	<dir>/queue/<ID>      a committed message: body, envelope, trailer
//	<dir>/queue/<ID>.st   its delivery state, once Update has run
//
// A message is one file: the body as received, then the envelope as JSON,
// then a fixed 32-byte trailer with both lengths, CRC-32C checksums of body,
// envelope and trailer, and a magic string (format.go has the details). One
// file means one rename makes the whole message visible, so there is no
// state in which an envelope exists without its body. The envelope follows
// the body because the body is streamed to disk before its length is
// known; the trailer at the very end is the first thing a truncation
// destroys, so a damaged file is reported (ErrCorrupt), never half read.
// JSON keeps the envelope readable with standard tools and easy to extend.
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
// Message IDs are 24 characters of base32 ("extended hex" alphabet, so they
// sort like the values they encode) over 8 bytes of Unix nanoseconds and 7
// random bytes: they sort by acceptance time, are unique across restarts and
// across processes, and are safe as file names.
//
// # Group commit, and why this one
//
// Measured on the development machine (ext4 on a virtio disk, 2 cores,
// shared; BenchmarkFsync* in fsync_bench_test.go):
//
//	create + write + fsync a 1 KiB file        0.40-0.50 ms (up to 3 ms under load)
//	rename + fsync of the directory            0.25 ms
//	the same, 2 to 64 goroutines at once       0.19-0.47 ms per file
//	append 20 KiB to a log + one fdatasync     0.18 ms per batch of 20
//
// Two things follow. Every fsync of a new file costs a journal commit and a
// disk cache flush, and concurrent fsyncs share only part of that (about
// 1.2-1.5 times cheaper per file), so the one cost per message that cannot
// be batched away in a file-per-message design is that file fsync. The
// directory fsync, on the other hand, covers any number of renames.
//
// So each session writes and fsyncs its own file, concurrently with the
// others, and hands the rename to a single committer goroutine. The
// committer takes every rename, state rewrite and removal that is waiting,
// applies them all (a removal's unlinks its caller has already made, so
// that they do not wait behind an fsync: see Remove), fsyncs the queue
// directory once, and wakes all their waiters; while it fsyncs, the next batch gathers, so the batch size
// follows the load with no timer and no added latency when idle. With 20
// concurrent sessions committing 1 KiB messages (BenchmarkCommit1KiB) this
// measured 1.2-1.3 fsyncs per message instead of 2, one directory fsync per
// 4-5 messages, and 1,900-4,100 durable messages a second depending on the
// other load on the machine. A 10 MiB message allocates the same 2.7 KiB as
// a 1 MiB one (BenchmarkCommit10MiB): bodies go to disk through a pooled
// 32 KiB buffer.
//
// A shared append-only log with one fdatasync per batch would need about 20
// times fewer flushes for small messages. It was not chosen: large bodies
// would have to be copied from a temporary file into the log (they cannot
// be held in memory), messages of many sessions interleave in one file and
// need per-record framing and recovery by replay, and delivered messages
// leave holes that need compaction. The file-per-message queue keeps each
// message a single file that is checked, read and removed on its own, as in
// Postfix and chasquid (which pay one fsync per message, without the shared
// directory fsync), and still commits thousands of messages a second on
// this disk. Should that become the bottleneck, a log for small messages
// can be added behind the same API.
package spool
