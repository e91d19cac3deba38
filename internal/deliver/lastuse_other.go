//go:build !linux

package deliver

import (
	"io/fs"
	"time"
)

// lastUse is a file's modification time where the access and change times
// are not at hand.
func lastUse(fi fs.FileInfo) time.Time { return fi.ModTime() }
