// Command misbehave stands in for mxguard in TestHarnessNotices: it logs
// "listening" as mxguard does, waits for SIGTERM, and then ends in the way
// its argument names, so that the test can show the harness notices each
// way a server can go wrong without the test's clients seeing it.
package main

import (
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

func main() {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	how := os.Args[1]
	if how == "race" {
		// Two goroutines write n unsynchronised: the race detector reports
		// it at once, and exits with its exit code in the end.
		n := 0
		done := make(chan struct{})
		go func() { n++; close(done) }()
		n++
		<-done
	}
	log.Info("listening", "addr", "127.0.0.1:1")
	<-term
	switch how {
	case "exit1":
		log.Error("stopped with an error")
		os.Exit(1)
	case "panic":
		go func() { panic("unrecovered, in a goroutine") }()
		time.Sleep(time.Second)
	case "session-panic":
		// What smtpd logs when it recovers a session's panic: the server
		// goes on, and exits 0.
		log.Error("panic in session", "panic", "runtime error: index out of range [1] with length 1",
			"stack", "goroutine 7 [running]:\nruntime/debug.Stack()\n")
	case "fatal":
		// A fatal error is no panic: nothing can recover it.
		var mu sync.Mutex
		mu.Unlock()
	}
}
