package archiver

import (
	"os/user"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/engine/tree"
)

// fill sets a node's type and metadata from a stat of its file.
func (r *run) fill(n *tree.Node, st *unix.Stat_t) {
	n.Type = nodeType(uint32(st.Mode))
	n.Mode = uint32(st.Mode) & tree.ModeMask
	n.UID, n.GID = st.Uid, st.Gid
	n.User, n.Group = r.names.user(st.Uid), r.names.group(st.Gid)
	n.ModTime = time.Unix(int64(st.Mtim.Sec), int64(st.Mtim.Nsec)).UTC()
	if n.Type != tree.File {
		return
	}
	n.Size = uint64(st.Size)
	n.Links, n.Inode, n.DeviceID = 0, 0, 0
	if st.Nlink > 1 {
		n.Links, n.Inode, n.DeviceID = uint64(st.Nlink), uint64(st.Ino), uint64(st.Dev)
	}
}

// nodeType maps the file type bits of a mode; unknown types map to skipped.
func nodeType(mode uint32) tree.Type {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return tree.File
	case unix.S_IFDIR:
		return tree.Dir
	case unix.S_IFLNK:
		return tree.Symlink
	case unix.S_IFCHR:
		return tree.CharDevice
	case unix.S_IFBLK:
		return tree.BlockDevice
	case unix.S_IFIFO:
		return tree.Fifo
	case unix.S_IFSOCK:
		return tree.Socket
	}
	return skipped
}

// names caches user and group names by id: a tree has few owners and
// many files, and a lookup reads /etc/passwd (or asks NSS).
type names struct {
	mu     sync.Mutex
	users  map[uint32]string
	groups map[uint32]string
}

func newNames() *names {
	return &names{users: map[uint32]string{}, groups: map[uint32]string{}}
}

func (c *names) user(uid uint32) string {
	return c.lookup(c.users, uid, func(id string) (string, error) {
		u, err := user.LookupId(id)
		if err != nil {
			return "", err
		}
		return u.Username, nil
	})
}

func (c *names) group(gid uint32) string {
	return c.lookup(c.groups, gid, func(id string) (string, error) {
		g, err := user.LookupGroupId(id)
		if err != nil {
			return "", err
		}
		return g.Name, nil
	})
}

// lookup returns the cached name of id, looking it up once; an id without
// a name has the empty name.
func (c *names) lookup(m map[uint32]string, id uint32, find func(string) (string, error)) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if name, ok := m[id]; ok {
		return name
	}
	name, err := find(strconv.FormatUint(uint64(id), 10))
	if err != nil {
		name = ""
	}
	m[id] = name
	return name
}
