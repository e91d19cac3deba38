//go:build !linux

package loadgen

import (
	"context"
	"errors"
	"time"
)

// epollAvailable reports whether this build has the epoll engine: epoll is
// Linux's.
const epollAvailable = false

func floodEpoll(context.Context, *FloodConfig, schedule, time.Time) (*FloodResult, error) {
	return nil, errors.New("the epoll engine needs Linux")
}
