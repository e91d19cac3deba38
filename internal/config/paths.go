package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// CheckPaths checks that each path the configuration names is of the kind
// its key needs: a file where a file is read, a directory where one is
// made, a socket (or nothing) where the control socket goes. It reads no
// file's content. `check` and `serve` both run it before anything is
// opened, created or removed, so that a directory given as the access map,
// or a file at the control socket's path, is reported with its key and
// line instead of failing later with a misleading error or, worse, being
// removed.
func (c *Config) CheckPaths() Errors {
	var errs Errors
	for i := range schema {
		k := &schema[i]
		if k.str == nil {
			continue
		}
		path := *k.str(c)
		if path == "" {
			continue
		}
		if err := checkPath(path, k.Path); err != nil {
			errs = append(errs, c.KeyError(k.Name, err))
		}
	}
	errs.sort()
	return errs
}

func checkPath(path string, kind PathKind) error {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		if kind == RegularFile {
			return fmt.Errorf("%s does not exist", path)
		}
		return nil // made when needed
	}
	if err != nil {
		return err // permission denied on a parent, and the like
	}
	mode := fi.Mode()
	switch kind {
	case RegularFile, OptionalFile:
		switch {
		case mode.IsDir():
			return fmt.Errorf("%s is a directory, not a file", path)
		case !mode.IsRegular():
			return fmt.Errorf("%s is not a regular file (%s)", path, kindName(mode))
		}
		if kind == RegularFile {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			f.Close()
		}
	case Directory:
		if !mode.IsDir() {
			return fmt.Errorf("%s is not a directory (%s)", path, kindName(mode))
		}
	case Socket:
		// Lstat: a symbolic link at the socket's path is not ours to remove.
		if li, err := os.Lstat(path); err == nil && li.Mode().Type() != fs.ModeSocket {
			return fmt.Errorf("%s exists and is not a socket (%s); mxguard removes only a stale socket of its own there", path, kindName(li.Mode()))
		}
	}
	return nil
}

func kindName(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m.IsRegular():
		return "a regular file"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "not a regular file"
}
