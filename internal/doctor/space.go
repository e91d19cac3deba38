package doctor

import (
	"errors"
	"fmt"
)

// Thresholds of the space and inodes checks. Free space is what an
// unprivileged user may use (f_bavail): mxguard should not run as root.
// When the filesystem fills, every message gets 452 4.3.1 until space is
// made, so the warning comes early. Each message is one file, so one inode
// (a message for several local recipients is one file, linked): the inode
// warning is a day's mail at about one message a second.
const (
	SpaceWarn     = 1 << 30   // bytes
	SpaceWarnPct  = 5         // % of the filesystem
	SpaceFail     = 100 << 20 // bytes
	SpaceFailPct  = 1
	InodesWarn    = 100_000
	InodesWarnPct = 5
	InodesFail    = 10_000
	InodesFailPct = 1
)

// errNoStatfs: statDir is not written for this system.
var errNoStatfs = errors.New("statfs is not used on this system")

// fsStat is what statfs says of a filesystem.
type fsStat struct {
	Avail, Total       uint64 // bytes: free for an unprivileged user, and in all
	FreeInodes, Inodes uint64 // Inodes is 0 where their number is not fixed (btrfs)
	Type               string // ext4, xfs, tmpfs...
	Volatile           bool   // in memory: lost at reboot
}

// Space reports the free space and the free inodes of the filesystem
// dataDir is on (or will be made on).
func Space(dataDir string) []Finding {
	dir, note := existing(dataDir)
	st, err := statDir(dir)
	if errors.Is(err, errNoStatfs) {
		return []Finding{finding(OK, CheckSpace, "not measured: %v", err), finding(OK, CheckInodes, "not measured: %v", err)}
	}
	if err != nil {
		return []Finding{finding(Fail, CheckSpace, "%v", err)}
	}
	return judgeSpace(dir, note, st)
}

// judgeSpace holds the thresholds: a Warn below SpaceWarn or SpaceWarnPct,
// a Fail below SpaceFail or SpaceFailPct, and likewise for inodes.
func judgeSpace(dir, note string, st fsStat) []Finding {
	pct := func(part, whole uint64) float64 {
		if whole == 0 {
			return 0
		}
		return 100 * float64(part) / float64(whole)
	}
	var out []Finding
	p := pct(st.Avail, st.Total)
	text := fmt.Sprintf("%s free of %s (%.1f %%) on %s", bytesText(st.Avail), bytesText(st.Total), p, place(dir, st.Type, note))
	switch {
	case st.Avail < SpaceFail || p < SpaceFailPct:
		out = append(out, finding(Fail, CheckSpace, "%s: below %s or %d %%: mxguard answers 452 4.3.1 to every message once it is full; make room first",
			text, bytesText(SpaceFail), SpaceFailPct))
	case st.Avail < SpaceWarn || p < SpaceWarnPct:
		out = append(out, finding(Warn, CheckSpace, "%s: below %s or %d %%: when it fills, every message gets 452 4.3.1 (insufficient system storage)",
			text, bytesText(SpaceWarn), SpaceWarnPct))
	default:
		out = append(out, finding(OK, CheckSpace, "%s", text))
	}
	if st.Inodes == 0 {
		return append(out, finding(OK, CheckInodes, "no fixed number of inodes on %s: files are limited by space alone", place(dir, st.Type)))
	}
	p = pct(st.FreeInodes, st.Inodes)
	text = fmt.Sprintf("%s free of %s (%.1f %%) on %s; each message takes one", group(int64(st.FreeInodes)), group(int64(st.Inodes)), p, dir)
	switch {
	case st.FreeInodes < InodesFail || p < InodesFailPct:
		out = append(out, finding(Fail, CheckInodes, "%s; below %s or %d %%: each message is a file, and with no inode left none can be stored",
			text, group(InodesFail), InodesFailPct))
	case st.FreeInodes < InodesWarn || p < InodesWarnPct:
		out = append(out, finding(Warn, CheckInodes, "%s; below %s (a day of mail at one message a second) or %d %%: each message is a file",
			text, group(InodesWarn), InodesWarnPct))
	default:
		out = append(out, finding(OK, CheckInodes, "%s", text))
	}
	return out
}
