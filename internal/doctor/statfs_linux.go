package doctor

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// statDir reads the figures of the filesystem dir is on.
func statDir(dir string) (fsStat, error) {
	var s unix.Statfs_t
	if err := unix.Statfs(dir, &s); err != nil {
		return fsStat{}, fmt.Errorf("statfs %s: %w", dir, err)
	}
	block := uint64(s.Frsize)
	if block == 0 {
		block = uint64(s.Bsize)
	}
	st := fsStat{
		Avail:      s.Bavail * block,
		Total:      s.Blocks * block,
		FreeInodes: s.Ffree,
		Inodes:     s.Files,
		Type:       fmt.Sprintf("filesystem type %#x", s.Type),
	}
	switch s.Type {
	case unix.EXT4_SUPER_MAGIC: // ext2 and ext3 too
		st.Type = "ext4"
	case unix.XFS_SUPER_MAGIC:
		st.Type = "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		st.Type = "btrfs"
	case 0x2fc12fc1:
		st.Type = "zfs"
	case unix.NFS_SUPER_MAGIC:
		st.Type = "nfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		st.Type = "overlayfs"
	case unix.TMPFS_MAGIC:
		st.Type, st.Volatile = "tmpfs", true
	case unix.RAMFS_MAGIC:
		st.Type, st.Volatile = "ramfs", true
	}
	return st, nil
}
