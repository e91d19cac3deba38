package console

import (
	"fmt"
	"net/http"
	"time"
)

// events is the live stream (server-sent events): every refresh, one
// "update" event whose data is a JSON object of the page's sections by
// element id, each the section's HTML, which the page's script puts in
// place. It ends when the client goes or the server stops (the admin
// listener's base context).
func (c *Console) events(w http.ResponseWriter, r *http.Request) {
	select {
	case c.streams <- struct{}{}:
		defer func() { <-c.streams }()
	default:
		http.Error(w, fmt.Sprintf("too many live consoles open (%d); the page still works without its live updates", maxStreams),
			http.StatusServiceUnavailable)
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	tick := time.NewTicker(refresh)
	defer tick.Stop()
	var sent []byte
	for {
		frags := c.fragments(c.snapshot())
		// The listener's write timeout is for whole responses; a stream
		// is given it anew for each event instead.
		rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		var err error
		if string(frags) != string(sent) {
			_, err = fmt.Fprintf(w, "event: update\ndata: %s\n\n", frags)
			sent = frags
		} else {
			_, err = fmt.Fprint(w, ": nothing new\n\n") // a comment keeps proxies from timing out
		}
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}
