package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// treeDiff compares two versions of a tree entry by entry.
type treeDiff struct {
	EntriesA int   `json:"entriesA"`
	EntriesB int   `json:"entriesB"`
	Changed  int   `json:"changed"`  // content (or link target, or type) differs
	MetaOnly int   `json:"metaOnly"` // same content, other mode, owner or mtime
	Added    int   `json:"added"`
	Removed  int   `json:"removed"`
	BytesA   int64 `json:"bytesA"`   // regular file contents
	BytesB   int64 `json:"bytesB"`   // regular file contents
	BytesNew int64 `json:"bytesNew"` // B's bytes in changed and added files
	// Where the changed files are: the directories (three levels) with the most, "dir: n".
	Where []string `json:"where"`
}

func (d treeDiff) String() string {
	pct := func(n int) string { return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(max(d.EntriesA, 1))) }
	s := fmt.Sprintf("%d → %d entries: %d changed content (%s), %d metadata only (mode, owner or mtime; %s), %d added, %d removed; %s of the file bytes are new or changed (%.1f%%)",
		d.EntriesA, d.EntriesB, d.Changed, pct(d.Changed), d.MetaOnly, pct(d.MetaOnly), d.Added, d.Removed,
		fmtBytes(d.BytesNew), 100*float64(d.BytesNew)/float64(max(d.BytesB, 1)))
	if len(d.Where) > 0 {
		s += "; changed content in " + strings.Join(d.Where, ", ")
	}
	return s
}

type entryInfo struct {
	kind    fs.FileMode
	content string // sha256 of a file, target of a link
	meta    string
	size    int64
}

func scanTree(root string) (map[string]entryInfo, error) {
	out := map[string]entryInfo{}
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := de.Info()
		if err != nil {
			return err
		}
		e := entryInfo{kind: fi.Mode().Type()}
		var uid, gid uint32
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = st.Uid, st.Gid
		}
		e.meta = fmt.Sprintf("%o %d:%d %d", fi.Mode(), uid, gid, fi.ModTime().Unix())
		switch {
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			e.size, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			e.content = fmt.Sprintf("%x", h.Sum(nil))
		case fi.Mode()&fs.ModeSymlink != 0:
			if e.content, err = os.Readlink(p); err != nil {
				return err
			}
		}
		out[rel] = e
		return nil
	})
	return out, err
}

func diffTrees(a, b string) (treeDiff, error) {
	ea, err := scanTree(a)
	if err != nil {
		return treeDiff{}, err
	}
	eb, err := scanTree(b)
	if err != nil {
		return treeDiff{}, err
	}
	d := treeDiff{EntriesA: len(ea), EntriesB: len(eb)}
	where := map[string]int{}
	for p, x := range ea {
		d.BytesA += x.size
		y, ok := eb[p]
		switch {
		case !ok:
			d.Removed++
		case x.kind != y.kind || x.content != y.content:
			d.Changed++
			d.BytesNew += y.size
			parts := strings.SplitN(filepath.ToSlash(p), "/", 4)
			where[strings.Join(parts[:min(len(parts), 3)], "/")]++
		case x.meta != y.meta:
			d.MetaOnly++
		}
	}
	for p, y := range eb {
		d.BytesB += y.size
		if _, ok := ea[p]; !ok {
			d.Added++
			d.BytesNew += y.size
		}
	}
	dirs := sortedKeys(where)
	sort.SliceStable(dirs, func(i, j int) bool { return where[dirs[i]] > where[dirs[j]] })
	for _, k := range dirs[:min(len(dirs), 4)] {
		d.Where = append(d.Where, fmt.Sprintf("%s/ %d", k, where[k]))
	}
	return d, nil
}
