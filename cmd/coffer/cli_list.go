package main

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/cofferhq/coffer/internal/protocol"
)

type backupsCmd struct {
	stateDirFlag
	Limit int  `help:"Show at most this many backups, the newest." default:"20"`
	JSON  bool `help:"Print JSON lines instead: one object per backup."`
}

// Run lists this client's backups, newest first.
func (c *backupsCmd) Run(g *globals) error {
	if c.Limit < 1 {
		return fmt.Errorf("--limit %d: give a number of backups, 1 or more", c.Limit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	a, err := c.openAgent(g.logger, 0)
	if err != nil {
		return err
	}
	list, err := a.Backups(ctx, c.Limit)
	if err != nil {
		return describeError(err)
	}
	if c.JSON {
		return writeJSONLines(g.stdout, list)
	}
	return writeBackups(g.stdout, list, time.Local)
}

// writeBackups prints backups as a table, newest first, times in loc.
func writeBackups(w io.Writer, list []protocol.BackupSummary, loc *time.Location) error {
	if len(list) == 0 {
		_, err := fmt.Fprintln(w, "This client has no backups yet: make one with  coffer backup PATH...")
		return err
	}
	list = slices.Clone(list)
	slices.SortStableFunc(list, func(a, b protocol.BackupSummary) int { return b.CreatedAt.Compare(a.CreatedAt) })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCREATED\tSTATE\tFILES\tSIZE\tADDED\tERRORS\tPATHS")
	for _, b := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.ID, b.CreatedAt.In(loc).Format("2006-01-02 15:04:05"), b.State,
			formatCount(b.Stats.Files), formatBytes(b.Stats.LogicalBytes), formatBytes(b.Stats.AddedBytes),
			formatCount(uint64(b.Errors)), joinPaths(b.Paths))
	}
	return tw.Flush()
}

// joinPaths shows a backup's paths in a table cell.
func joinPaths(paths []string) string {
	q := make([]string, len(paths))
	for i, p := range paths {
		q[i] = quoteName(p)
	}
	s := strings.Join(q, " ")
	if r := []rune(s); len(r) > 60 {
		s = string(r[:59]) + "…"
	}
	return s
}

type lsCmd struct {
	stateDirFlag
	BackupID string `arg:"" name:"backup-id" help:"The backup to look into (see \"coffer backups\")."`
	Path     string `arg:"" optional:"" help:"Directory in the backup to list, e.g. home/alice (a leading / is ignored). Default: the backup's root."`
	JSON     bool   `help:"Print JSON lines instead: one object per entry."`
}

// Run lists one directory of a backup.
func (c *lsCmd) Run(g *globals) error {
	dir := ""
	if c.Path != "" {
		var err error
		if dir, err = backupPath(c.Path); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	a, err := c.openAgent(g.logger, 0)
	if err != nil {
		return err
	}
	entries, err := a.List(ctx, c.BackupID, dir)
	if err != nil {
		return describeError(err)
	}
	if c.JSON {
		return writeJSONLines(g.stdout, entries)
	}
	return writeEntries(g.stdout, entries, time.Local)
}

// writeEntries prints entries like "ls -l": mode, owner, group, size,
// modification time, name, and a symlink's target.
func writeEntries(w io.Writer, entries []protocol.TreeEntry, loc *time.Location) error {
	type row struct{ mode, user, group, size, mtime, name string }
	rows := make([]row, len(entries))
	var wUser, wGroup, wSize int
	for i, e := range entries {
		r := row{mode: modeString(e.Type, e.Mode), user: owner(e.User, e.UID), group: owner(e.Group, e.GID),
			size: fmt.Sprint(e.Size), mtime: e.Mtime.In(loc).Format("2006-01-02 15:04"), name: quoteName(e.Name)}
		if e.Type == "symlink" {
			r.name += " -> " + quoteName(e.Target)
		}
		wUser, wGroup, wSize = max(wUser, len(r.user)), max(wGroup, len(r.group)), max(wSize, len(r.size))
		rows[i] = r
	}
	for _, r := range rows {
		if _, err := fmt.Fprintf(w, "%s  %-*s  %-*s  %*s  %s  %s\n", r.mode, wUser, r.user, wGroup, r.group, wSize, r.size, r.mtime, r.name); err != nil {
			return err
		}
	}
	return nil
}

// owner is a user or group name, or its number when the backup has none.
func owner(name string, id uint32) string {
	if name != "" {
		return quoteName(name)
	}
	return fmt.Sprint(id)
}

// modeString renders a type and permission bits (with setuid, setgid and
// sticky) as ls does: "drwxr-sr-x", "-rwsr-xr-x", "lrwxrwxrwx".
func modeString(typ string, mode uint32) string {
	b := []byte("?rwxrwxrwx")
	switch typ {
	case "file":
		b[0] = '-'
	case "dir":
		b[0] = 'd'
	case "symlink":
		b[0] = 'l'
	case "dev":
		b[0] = 'b'
	case "chardev":
		b[0] = 'c'
	case "fifo":
		b[0] = 'p'
	case "socket":
		b[0] = 's'
	}
	for i := range 9 {
		if mode&(1<<(8-i)) == 0 {
			b[1+i] = '-'
		}
	}
	special := func(bit uint32, pos int, set, unset byte) {
		if mode&bit == 0 {
			return
		}
		if b[pos] == '-' {
			b[pos] = unset
		} else {
			b[pos] = set
		}
	}
	special(0o4000, 3, 's', 'S')
	special(0o2000, 6, 's', 'S')
	special(0o1000, 9, 't', 'T')
	return string(b)
}

// writeJSONLines prints each item as one line of JSON, like the job
// commands' --json.
func writeJSONLines[T any](w io.Writer, items []T) error {
	for _, it := range items {
		if err := writeJSONLine(w, it); err != nil {
			return err
		}
	}
	return nil
}
