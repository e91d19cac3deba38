package deliver

import (
	"io/fs"
	"syscall"
	"time"
)

// lastUse is the latest of a file's access, modification and change times:
// a file that any of them shows in use is not abandoned.
func lastUse(fi fs.FileInfo) time.Time {
	t := fi.ModTime()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		for _, ts := range []syscall.Timespec{st.Atim, st.Ctim} {
			if u := time.Unix(ts.Unix()); u.After(t) {
				t = u
			}
		}
	}
	return t
}
