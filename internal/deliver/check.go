package deliver

import (
	"context"
	"fmt"
	"net"
)

// Greeting is what Check learnt of the downstream.
type Greeting struct {
	// Banner is the greeting reply in one line ("220 mail.example.org
	// ESMTP").
	Banner string
	// Extensions are those announced in reply to EHLO or LHLO, by upper
	// case keyword, with their parameters ("SIZE": "10240000"); empty when
	// the server only took HELO.
	Extensions map[string]string
}

// Check connects to the downstream, reads its greeting, introduces itself
// with EHLO (HELO when refused) or LHLO, and says QUIT: what every delivery
// does before MAIL (Relay.greet, but keeping the banner), without STARTTLS
// and without sending anything. It is for `mxguard doctor`, which checks
// the target before mail is relayed to it. Each wait is bounded by the
// Relay's timeouts and by ctx.
func (r *Relay) Check(ctx context.Context) (Greeting, error) {
	d := net.Dialer{Timeout: r.t.Connect}
	nc, err := d.DialContext(ctx, r.network, r.addr)
	if err != nil {
		return Greeting{}, fmt.Errorf("connect to %s: %w", r.url, err)
	}
	c := newConn(nc)
	c.bind(ctx)
	defer c.close()
	greet, err := c.read(r.t.Initial)
	if err != nil {
		return Greeting{}, fmt.Errorf("%s: reading greeting: %w", r.url, err)
	}
	if greet.class() != 2 {
		return Greeting{}, fmt.Errorf("%s: greeting: %s", r.url, greet)
	}
	ext, err := r.hello(c)
	if err != nil {
		return Greeting{}, err
	}
	rep, err := c.cmd(r.t.Quit, "QUIT")
	if err != nil {
		return Greeting{}, fmt.Errorf("%s: QUIT: %w", r.url, err)
	}
	if rep.class() != 2 {
		return Greeting{}, fmt.Errorf("%s: QUIT: %s", r.url, rep)
	}
	return Greeting{Banner: greet.String(), Extensions: ext}, nil
}
