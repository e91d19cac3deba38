//go:build !linux

package hold

import (
	"net"
	"time"
)

type poller struct{}

func newPoller() (poller, error) { return poller{}, ErrUnsupported }

func (poller) add(int32, uint32) error  { return ErrUnsupported }
func (poller) del(int32)                {}
func (poller) setDeadline(time.Time)    {}
func (poller) wait(out []event) []event { return out }
func (poller) close()                   {}

func Detach(*net.TCPConn) (int, error) { return -1, ErrUnsupported }

func Attach(int) (net.Conn, error) { return nil, ErrUnsupported }
