package loadgen

import "syscall"

// RaiseNoFileLimit raises this process's soft limit on open files to its
// hard limit and returns the new soft limit. Each held connection is a file
// descriptor, and the usual soft limit of 1024 would stop an idle run
// early. (Go's runtime already does this at start-up since Go 1.19; doing
// it here as well makes the limit explicit and reportable.)
func RaiseNoFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, err
		}
	}
	return lim.Cur, nil
}
