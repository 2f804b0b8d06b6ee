package archiver

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/engine/tree"
)

// pathNode is a directory of the tree that the paths given to ArchivePaths
// make, from "/" down: either a given path (stored whole) or a directory on
// the way to some, listing only those of its entries that lead to them.
type pathNode struct {
	name     string
	given    bool
	children []*pathNode // sorted by name; none for a given path
}

// planPaths checks, cleans and de-duplicates paths and returns the tree
// they make, rooted at "/".
func planPaths(paths []string) (*pathNode, error) {
	if len(paths) == 0 {
		return nil, errors.New("no paths to back up")
	}
	clean := make([]string, 0, len(paths))
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("path %q is not absolute: give paths to back up from the root, like /home/user", p)
		}
		if strings.IndexByte(p, 0) >= 0 {
			return nil, fmt.Errorf("path %q contains a NUL byte", p)
		}
		clean = append(clean, filepath.Clean(p))
	}
	// Sorted, a path comes right after "/" and the paths it is inside;
	// those covered by an earlier one are dropped.
	slices.Sort(clean)
	root := &pathNode{}
	var kept []string
	for _, p := range clean {
		if slices.ContainsFunc(kept, func(k string) bool { return within(p, k) }) {
			continue
		}
		kept = append(kept, p)
		n := root
		for name := range strings.SplitSeq(strings.TrimPrefix(p, "/"), "/") {
			if name == "" { // p is "/"
				break
			}
			i, found := slices.BinarySearchFunc(n.children, name, func(c *pathNode, name string) int { return strings.Compare(c.name, name) })
			if !found {
				n.children = slices.Insert(n.children, i, &pathNode{name: name})
			}
			n = n.children[i]
		}
		n.given = true
	}
	return root, nil
}

// within reports whether the clean absolute path p is dir or inside it.
func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// walkWay lists the entries of the way directory d that lead to given
// paths: a given path is an ordinary entry, a directory on the way is
// opened and walked the same way.
func (r *run) walkWay(d *dir) error {
	kids := d.way.children
	d.nodes = make([]tree.Node, len(kids))
	for i, k := range kids {
		if err := r.ctx.Err(); err != nil {
			return err
		}
		var err error
		if k.given {
			err = r.entry(d, i, k.name)
		} else {
			err = r.wayDir(d, i, k)
		}
		if err != nil {
			return err
		}
	}
	return r.done(d)
}

// wayDir opens and walks the way directory k, entry i of d. A symlink on
// the way is followed, as the system follows it for the given path.
func (r *run) wayDir(d *dir, i int, k *pathNode) error {
	n := &d.nodes[i]
	n.Name = k.name
	p := d.join(k.name)
	fd, err := openat(d.fd, k.name, unix.O_RDONLY|unix.O_DIRECTORY)
	pathOnly := false
	if errors.Is(err, unix.EACCES) && oPath != 0 {
		// Searchable but not readable (mode 711): enough to reach the
		// paths below, not to read its extended attributes.
		fd, err = openat(d.fd, k.name, oPath|unix.O_DIRECTORY)
		pathOnly = true
	}
	if err != nil {
		n.Type = skipped
		r.reportGiven(p, k, err)
		return nil
	}
	child := d.child(i, k.name, fd)
	child.way = k
	r.opened(child)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		r.closeDir(child)
		n.Type = skipped
		r.reportGiven(p, k, err)
		return nil
	}
	r.fill(n, &st)
	if !pathOnly {
		n.Xattrs = r.xattrs(fd, p)
	}
	d.pending.Add(1)
	return r.walk(child)
}

// reportGiven reports each given path below the way directory k (at p),
// which could not be opened.
func (r *run) reportGiven(p string, k *pathNode, err error) {
	if errors.Is(err, unix.ENOTDIR) {
		err = fmt.Errorf("path given to back up: %s is not a directory", p)
	} else {
		err = fmt.Errorf("path given to back up: %s: %w", p, err)
	}
	var visit func(p string, k *pathNode)
	visit = func(p string, k *pathNode) {
		if k.given {
			r.report(p, err)
		}
		for _, c := range k.children {
			visit(p+"/"+c.name, c)
		}
	}
	visit(p, k)
}
