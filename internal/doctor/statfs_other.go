//go:build !linux

package doctor

// statDir is written for Linux only, the system mxguard is run on.
func statDir(dir string) (fsStat, error) {
	return fsStat{}, errNoStatfs
}
