package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The application trees: two releases of a Go program (Outpost itself, built from two commits
// of this repository) and two versions of an npm dependency tree. Each is a directory laid out
// as the files sit in the image (usr/local/bin/outpost, app/node_modules/...), built once into
// the cache.

// goApp is Outpost built at one commit: /usr/local/bin/outpost (static, stripped, as `make
// build` builds it), its README as documentation and a configuration file.
type goApp struct {
	Commit  string    `json:"commit"`
	Subject string    `json:"subject"`
	BinSize int64     `json:"binSize"`
	Built   time.Time `json:"built"`
	// Unstripped: built without -s -w, its DWARF kept (compressed).
	Unstripped bool   `json:"unstripped,omitempty"`
	Dir        string `json:"-"`
}

func (g *goApp) short() string { return g.Commit[:12] }

func buildGoApp(ctx context.Context, cache, repo, rev string, unstripped bool, logf func(string, ...any)) (*goApp, error) {
	out, err := (command{limit: time.Minute}).output(ctx, "git", "-C", repo, "rev-parse", "--verify", rev+"^{commit}")
	if err != nil {
		return nil, fmt.Errorf("resolving %s in %s: %w", rev, repo, err)
	}
	commit := strings.TrimSpace(string(out))
	dir := filepath.Join(cache, "go", commit)
	strip := "-s -w "
	if unstripped {
		dir, strip = filepath.Join(cache, "go-unstripped", commit), ""
	}
	meta := filepath.Join(dir, "build.json")
	tree := filepath.Join(dir, "tree")
	if raw, err := os.ReadFile(meta); err == nil {
		var g goApp
		if json.Unmarshal(raw, &g) == nil && isDir(tree) {
			g.Dir = tree
			return &g, nil
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return nil, err
	}
	subject, _ := (command{limit: time.Minute}).output(ctx, "git", "-C", repo, "log", "-1", "--format=%s", commit)
	g := &goApp{Commit: commit, Subject: strings.TrimSpace(string(subject)), Dir: tree, Unstripped: unstripped}
	logf("building Outpost at %s (%s)", g.short(), shorten(g.Subject, 70))
	// git archive reads the commit; nothing in the repository changes.
	archive, err := (command{limit: 2 * time.Minute}).output(ctx, "git", "-C", repo, "archive", "--format=tar", commit)
	if err != nil {
		return nil, err
	}
	if err := untar(bytes.NewReader(archive), src); err != nil {
		return nil, fmt.Errorf("unpacking %s: %w", g.short(), err)
	}
	bin := filepath.Join(tree, "usr", "local", "bin", "outpost")
	const vpkg = "github.com/outpost-registry/outpost/internal/version"
	env := append(os.Environ(), "CGO_ENABLED=0", "GOTOOLCHAIN=local", "GOFLAGS=")
	c := command{dir: src, env: env, limit: 10 * time.Minute, logPath: filepath.Join(dir, "build.log")}
	if err := c.run(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", fmt.Sprintf("%s-X %s.Version=%s -X %s.Commit=%s", strip, vpkg, commit[:7], vpkg, commit[:7]),
		"-o", bin, "./cmd/outpost"); err != nil {
		return nil, err
	}
	for _, f := range []string{"README.md", "LICENSE"} {
		if _, err := os.Stat(filepath.Join(src, f)); err == nil {
			if err := copyFile(filepath.Join(src, f), filepath.Join(tree, "usr", "share", "doc", "outpost", f), 0o644); err != nil {
				return nil, err
			}
		}
	}
	cfg := fmt.Sprintf(`# Outpost %s: a connected registry on this device.
addr: 0.0.0.0:5000
dataDir: /var/lib/outpost
log:
  level: info
  format: json
sync:
  repositories: ["apps/*"]
  schedule: "*/5 * * * *"
`, commit[:7])
	if err := os.MkdirAll(filepath.Join(tree, "etc", "outpost"), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tree, "etc", "outpost", "config.yaml"), []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(tree, "var", "lib", "outpost"), 0o755); err != nil {
		return nil, err
	}
	fi, err := os.Stat(bin)
	if err != nil {
		return nil, err
	}
	g.BinSize = fi.Size()
	g.Built = time.Now().UTC()
	if err := os.RemoveAll(src); err != nil {
		return nil, err
	}
	raw, _ := json.MarshalIndent(g, "", "  ")
	return g, os.WriteFile(meta, raw, 0o644)
}

// untar unpacks a git archive: directories, files and symbolic links, no absolute or upward
// paths.
func untar(r io.Reader, dst string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("unsafe path %q", h.Name)
		}
		p := filepath.Join(dst, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o777)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(h.Linkname, p); err != nil {
				return err
			}
		}
	}
}

// npmApp is a Node.js application: package.json, the lock file npm wrote, a server.js and
// node_modules, under /app.
type npmApp struct {
	Label string    `json:"label"` // "express@4.18.2 + 5 more"
	Deps  []string  `json:"deps"`  // name@version
	Files int       `json:"files"`
	Bytes int64     `json:"bytes"`
	Built time.Time `json:"built"`
	Dir   string    `json:"-"`
}

func buildNpmApp(ctx context.Context, cache, version string, deps []string, logf func(string, ...any)) (*npmApp, error) {
	key := fmt.Sprintf("%x", sha256.Sum256([]byte(version+"\n"+strings.Join(deps, "\n"))))[:16]
	dir := filepath.Join(cache, "npm", key)
	meta := filepath.Join(dir, "build.json")
	tree := filepath.Join(dir, "tree")
	if raw, err := os.ReadFile(meta); err == nil {
		var a npmApp
		if json.Unmarshal(raw, &a) == nil && isDir(tree) {
			a.Dir = tree
			return &a, nil
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	app := filepath.Join(tree, "app")
	if err := os.MkdirAll(app, 0o755); err != nil {
		return nil, err
	}
	a := &npmApp{Deps: deps, Dir: tree, Label: deps[0]}
	if len(deps) > 1 {
		a.Label += fmt.Sprintf(" + %d more", len(deps)-1)
	}
	depMap := map[string]string{}
	for _, d := range deps {
		i := strings.LastIndex(d, "@")
		if i <= 0 {
			return nil, fmt.Errorf("npm dependency %q: want name@version", d)
		}
		depMap[d[:i]] = d[i+1:]
	}
	pkg, _ := json.MarshalIndent(map[string]any{
		"name": "bench-app", "version": version, "private": true, "main": "server.js",
		"scripts":      map[string]string{"start": "node server.js"},
		"dependencies": depMap,
	}, "", "  ")
	if err := os.WriteFile(filepath.Join(app, "package.json"), append(pkg, '\n'), 0o644); err != nil {
		return nil, err
	}
	server := fmt.Sprintf(`'use strict';
// bench-app %s
const express = require('express');
const app = express();
app.get('/healthz', (req, res) => res.json({ status: 'ok', version: '%s' }));
app.listen(process.env.PORT || 3000);
`, version, version)
	if err := os.WriteFile(filepath.Join(app, "server.js"), []byte(server), 0o644); err != nil {
		return nil, err
	}
	logf("npm install of %s (app %s)", strings.Join(deps, " "), version)
	env := append(os.Environ(), "npm_config_update_notifier=false", "npm_config_fund=false", "npm_config_audit=false")
	c := command{dir: app, env: env, limit: 10 * time.Minute, logPath: filepath.Join(dir, "npm.log")}
	if err := c.run(ctx, "npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=warn"); err != nil {
		return nil, err
	}
	err := filepath.Walk(tree, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			a.Files++
			a.Bytes += fi.Size()
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	a.Built = time.Now().UTC()
	raw, _ := json.MarshalIndent(a, "", "  ")
	return a, os.WriteFile(meta, raw, 0o644)
}

func shorten(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}
