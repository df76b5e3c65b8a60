package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The Debian base image, in two versions.
//
// Version A is `debootstrap --variant=minbase bookworm` from the machine's Debian mirror,
// trimmed the way Debian's official container images are (no downloaded .debs, no apt lists, no
// logs, an empty /dev, no host files such as resolv.conf and hostname), with the deb822 sources
// of the container images (bookworm, bookworm-updates, bookworm-security).
//
// Version B is the next monthly update of A, made the way a real one is made: a copy of A in
// which `apt-get update && apt-get upgrade` runs in a chroot against bookworm-updates and
// bookworm-security. That upgrades the packages with pending security fixes (on 2026-11-22:
// apt, libapt-pkg6.0, liblzma5, libpcre2-8-0, perl-base, tzdata) and so rewrites their files,
// /var/lib/dpkg (status, info/*.list and *.md5sums), /etc/ld.so.cache and
// /var/cache/ldconfig/aux-cache, and the mtimes of every directory dpkg touched, before the
// same trimming. Should no update be pending when the cache is built (a point release folded
// them into bookworm), B instead installs a few small packages (debianExtra), which changes
// the same metadata. The build is cached, so both stay the same across runs; the notes print
// what B changed.
//
// Without debootstrap (not root, not installable, or failing), both come from .deb packages
// fetched with `apt-get download` and unpacked with `dpkg-deb -x`: A the minbase package set at
// bookworm's versions, B the same at the newest versions the mirror has (updates and security)
// plus debianExtra, each with a /var/lib/dpkg/status made from the packages' control files.
// No maintainer script runs there, so that tree is only an approximation of a root filesystem.

// debianMinbase is the package set of `debootstrap --variant=minbase bookworm`, for the
// apt-get download fallback.
var debianMinbase = strings.Fields(`adduser apt base-files base-passwd bash bsdutils coreutils dash
debconf debian-archive-keyring debianutils diffutils dpkg e2fsprogs findutils gcc-12-base gpgv
grep gzip hostname init-system-helpers libacl1 libapt-pkg6.0 libattr1 libaudit-common libaudit1
libblkid1 libbz2-1.0 libc-bin libc6 libcap-ng0 libcap2 libcom-err2 libcrypt1 libdb5.3
libdebconfclient0 libext2fs2 libffi8 libgcc-s1 libgcrypt20 libgmp10 libgnutls30 libgpg-error0
libhogweed6 libidn2-0 liblz4-1 liblzma5 libmd0 libmount1 libnettle8 libp11-kit0 libpam-modules
libpam-modules-bin libpam-runtime libpam0g libpcre2-8-0 libseccomp2 libselinux1
libsemanage-common libsemanage2 libsepol2 libsmartcols1 libss2 libstdc++6 libsystemd0
libtasn1-6 libtinfo6 libudev1 libunistring2 libuuid1 libxxhash0 libzstd1 login logsave mawk
mount ncurses-base ncurses-bin passwd perl-base sed sysvinit-utils tar tzdata util-linux
util-linux-extra zlib1g`)

// debianExtra are installed in B when no update is pending, and in the fallback's B.
var debianExtra = []string{"less", "netbase"}

// debianBuild describes the two trees, as the cache keeps it.
type debianBuild struct {
	Method    string    `json:"method"` // "debootstrap" or "apt-get download + dpkg-deb -x"
	Mirror    string    `json:"mirror"`
	Security  string    `json:"security"`
	Upgraded  []string  `json:"upgraded"`  // "name old → new" in B
	Installed []string  `json:"installed"` // packages B has and A has not
	Diff      treeDiff  `json:"diff"`
	Built     time.Time `json:"built"`
	Fallback  string    `json:"fallback,omitempty"` // why debootstrap was not used
	A, B      string    `json:"-"`
}

// stamp identifies this build, so that layers made from an older one are remade.
func (d *debianBuild) stamp() string { return d.Method + "@" + d.Built.UTC().Format(time.RFC3339Nano) }

func buildDebian(ctx context.Context, cache string, o options, logf func(string, ...any)) (*debianBuild, error) {
	dir := filepath.Join(cache, "debian")
	meta := filepath.Join(dir, "build.json")
	a, b := filepath.Join(dir, "A"), filepath.Join(dir, "B")
	if raw, err := os.ReadFile(meta); err == nil {
		var d debianBuild
		if json.Unmarshal(raw, &d) == nil && isDir(a) && isDir(b) && (o.debian == "auto" || methodKey(d.Method) == o.debian) {
			d.A, d.B = a, b
			if d.Diff.Where == nil { // a cache from before the breakdown was recorded
				if d.Diff, err = diffTrees(a, b); err != nil {
					return nil, err
				}
				raw, _ := json.MarshalIndent(&d, "", "  ")
				if err := os.WriteFile(meta, raw, 0o644); err != nil {
					return nil, err
				}
			}
			return &d, nil
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for _, p := range []string{meta, a, b} {
		if err := removeTree(p); err != nil {
			return nil, err
		}
	}
	mirror, security := debianMirrors(o.debianMirror)
	d := &debianBuild{Mirror: mirror, Security: security, A: a, B: b}
	logPath := filepath.Join(dir, "build.log")
	t := time.Now()
	var err error
	if o.debian != "debs" {
		logf("building Debian bookworm minbase with debootstrap from %s (a minute or two; log %s)", mirror, logPath)
		err = debootstrapAB(ctx, d, logPath, logf)
		if uerr := unmountUnder(dir); uerr != nil {
			return nil, uerr
		}
		if err != nil && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil && o.debian == "debootstrap" {
			return nil, err
		}
		if err != nil {
			d.Fallback = firstLine(err.Error())
			logf("debootstrap failed (%v); falling back to apt-get download + dpkg-deb -x", d.Fallback)
		}
	}
	if o.debian == "debs" || err != nil {
		for _, p := range []string{a, b} {
			if err := removeTree(p); err != nil {
				return nil, err
			}
		}
		if err := debsAB(ctx, d, dir, logPath, logf); err != nil {
			return nil, err
		}
	}
	if d.Diff, err = diffTrees(a, b); err != nil {
		return nil, err
	}
	d.Built = time.Now().UTC()
	raw, _ := json.MarshalIndent(d, "", "  ")
	if err := os.WriteFile(meta, raw, 0o644); err != nil {
		return nil, err
	}
	logf("Debian trees built in %s (%s)", fmtDur(time.Since(t)), d.Method)
	return d, nil
}

func methodKey(method string) string {
	if method == "debootstrap" {
		return "debootstrap"
	}
	return "debs"
}

// debianMirrors finds the Debian and Debian security mirrors in the machine's apt sources, the
// ones known to work here; override gives the first.
func debianMirrors(override string) (mirror, security string) {
	mirror, security = "http://deb.debian.org/debian", "http://deb.debian.org/debian-security"
	found := false
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	for _, f := range append([]string{"/etc/apt/sources.list"}, files...) {
		if !strings.HasSuffix(f, ".list") && !strings.HasSuffix(f, ".sources") {
			continue
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n") {
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "#") {
				continue
			}
			for _, w := range strings.Fields(line) {
				if !strings.HasPrefix(w, "http://") && !strings.HasPrefix(w, "https://") {
					continue
				}
				u := strings.TrimRight(w, "/")
				switch {
				case strings.HasSuffix(u, "/debian-security"):
					security = u
				case strings.HasSuffix(u, "/debian") && !found:
					mirror, found = u, true
				}
			}
		}
	}
	if override != "" {
		mirror = strings.TrimRight(override, "/")
	}
	return mirror, security
}

func debootstrapAB(ctx context.Context, d *debianBuild, logPath string, logf func(string, ...any)) error {
	if os.Geteuid() != 0 {
		return errors.New("debootstrap needs root")
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		logf("installing debootstrap with apt-get")
		c := command{logPath: logPath, limit: 5 * time.Minute, env: aptEnv()}
		if err := c.run(ctx, "apt-get", "install", "-y", "--no-install-recommends", "debootstrap"); err != nil {
			if err2 := c.run(ctx, "apt-get", "update"); err2 != nil {
				return err2
			}
			if err := c.run(ctx, "apt-get", "install", "-y", "--no-install-recommends", "debootstrap"); err != nil {
				return err
			}
		}
	}
	c := command{logPath: logPath, limit: 20 * time.Minute, env: aptEnv()}
	if err := c.run(ctx, "debootstrap", "--variant=minbase", "bookworm", d.A, d.Mirror); err != nil {
		return err
	}
	d.Method = "debootstrap"
	if err := writeSources(d.A, d.Mirror, d.Security); err != nil {
		return err
	}
	before, err := dpkgPackages(d.A)
	if err != nil {
		return err
	}

	// B: A's next update, applied in a chroot of a copy made before A is trimmed (apt needs
	// /dev/null).
	logf("making Debian B: apt-get upgrade from bookworm-updates and bookworm-security in a chroot of a copy of A")
	c.limit = 5 * time.Minute
	if err := unmountUnder(d.A); err != nil {
		return err
	}
	if err := c.run(ctx, "cp", "-a", d.A, d.B); err != nil {
		return err
	}
	if err := trimRootfs(d.A); err != nil {
		return err
	}
	if err := copyFile("/etc/resolv.conf", filepath.Join(d.B, "etc", "resolv.conf"), 0o644); err != nil {
		return err
	}
	chroot := func(args ...string) ([]byte, error) {
		return c.output(ctx, "chroot", append([]string{d.B}, args...)...)
	}
	if _, err := chroot("apt-get", "update"); err != nil {
		return err
	}
	sim, err := chroot("apt-get", "-s", "upgrade")
	if err != nil {
		return err
	}
	d.Upgraded = parseAptSimulation(sim)
	confold := []string{"-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"}
	if len(d.Upgraded) > 0 {
		if _, err := chroot(append(append([]string{"apt-get", "-y"}, confold...), "upgrade")...); err != nil {
			return err
		}
	} else {
		logf("no update pending for bookworm minbase: Debian B installs %s instead", strings.Join(debianExtra, ", "))
		if _, err := chroot(append(append([]string{"apt-get", "-y", "--no-install-recommends"}, confold...), append([]string{"install"}, debianExtra...)...)...); err != nil {
			return err
		}
	}
	if _, err := chroot("apt-get", "clean"); err != nil {
		return err
	}
	after, err := dpkgPackages(d.B)
	if err != nil {
		return err
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			d.Installed = append(d.Installed, p)
		}
	}
	slices.Sort(d.Installed)
	return trimRootfs(d.B)
}

// parseAptSimulation turns the Inst lines of `apt-get -s upgrade` into "name old → new".
func parseAptSimulation(out []byte) []string {
	var up []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[0] != "Inst" || !strings.HasPrefix(f[2], "[") {
			continue
		}
		up = append(up, fmt.Sprintf("%s %s → %s", f[1], strings.Trim(f[2], "[]"), strings.TrimPrefix(f[3], "(")))
	}
	return up
}

// dpkgPackages reads name → version from the tree's dpkg status.
func dpkgPackages(root string) (map[string]string, error) {
	raw, err := os.ReadFile(filepath.Join(root, "var", "lib", "dpkg", "status"))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, para := range strings.Split(string(raw), "\n\n") {
		var name, version string
		installed := false
		for _, line := range strings.Split(para, "\n") {
			switch {
			case strings.HasPrefix(line, "Package: "):
				name = strings.TrimPrefix(line, "Package: ")
			case strings.HasPrefix(line, "Version: "):
				version = strings.TrimPrefix(line, "Version: ")
			case strings.HasPrefix(line, "Status: ") && strings.HasSuffix(line, " installed"):
				installed = true
			}
		}
		if name != "" && installed {
			out[name] = version
		}
	}
	return out, nil
}

// writeSources gives the tree the apt sources of Debian's container images.
func writeSources(root, mirror, security string) error {
	_ = os.Remove(filepath.Join(root, "etc", "apt", "sources.list"))
	src := fmt.Sprintf(`Types: deb
URIs: %s
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: %s
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`, mirror, security)
	p := filepath.Join(root, "etc", "apt", "sources.list.d", "debian.sources")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(src), 0o644)
}

// trimRootfs removes what Debian's container images leave out: downloaded packages and apt
// lists, logs, device nodes, temporary files, and the host's files debootstrap copies in.
func trimRootfs(root string) error {
	emptyDir := func(rel string, keepDirs bool) error {
		entries, err := os.ReadDir(filepath.Join(root, rel))
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		for _, e := range entries {
			if keepDirs && e.IsDir() {
				continue
			}
			if err := os.RemoveAll(filepath.Join(root, rel, e.Name())); err != nil {
				return err
			}
		}
		return nil
	}
	for _, rel := range []string{"dev", "proc", "sys", "tmp", "var/tmp", "run", "var/log/apt"} {
		if err := emptyDir(rel, false); err != nil {
			return err
		}
	}
	for _, rel := range []string{"var/lib/apt/lists", "var/cache/apt/archives", "var/cache/apt"} {
		if err := emptyDir(rel, true); err != nil {
			return err
		}
	}
	var globs []string
	for _, g := range []string{"var/log/*.log", "var/cache/debconf/*-old", "var/lib/dpkg/*-old"} {
		m, _ := filepath.Glob(filepath.Join(root, g))
		globs = append(globs, m...)
	}
	for _, rel := range []string{"etc/resolv.conf", "etc/hostname", "etc/hosts", "var/lib/apt/lists/lock", "var/cache/apt/archives/lock"} {
		globs = append(globs, filepath.Join(root, rel))
	}
	for _, p := range globs {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

// debsAB builds both trees from .deb packages, without debootstrap.
func debsAB(ctx context.Context, d *debianBuild, dir, logPath string, logf func(string, ...any)) error {
	d.Method = "apt-get download + dpkg-deb -x"
	c := command{logPath: logPath, limit: 10 * time.Minute, env: aptEnv()}
	if os.Geteuid() == 0 {
		if err := c.run(ctx, "apt-get", "update"); err != nil {
			logf("apt-get update failed, using the lists the machine has: %v", firstLine(err.Error()))
		}
	}
	get := func(sub string, specs []string) ([]string, error) {
		dd := filepath.Join(dir, sub)
		if err := os.RemoveAll(dd); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(dd, 0o755); err != nil {
			return nil, err
		}
		if err := (command{dir: dd, logPath: logPath, limit: 10 * time.Minute, env: aptEnv()}).run(ctx, "apt-get", append([]string{"download"}, specs...)...); err != nil {
			return nil, err
		}
		debs, err := filepath.Glob(filepath.Join(dd, "*.deb"))
		slices.Sort(debs)
		return debs, err
	}
	var specsA []string
	for _, p := range debianMinbase {
		specsA = append(specsA, p+"/bookworm")
	}
	logf("fetching %d packages for Debian A (bookworm) and %d for B (newest) with apt-get download", len(specsA), len(debianMinbase)+len(debianExtra))
	debsA, err := get("debs-A", specsA)
	if err != nil {
		return err
	}
	debsB, err := get("debs-B", append(slices.Clone(debianMinbase), debianExtra...))
	if err != nil {
		return err
	}
	names := map[string]string{}
	for _, f := range debsA {
		n, v, _ := strings.Cut(filepath.Base(f), "_")
		names[n] = v
	}
	for _, f := range debsB {
		n, v, _ := strings.Cut(filepath.Base(f), "_")
		switch old, ok := names[n]; {
		case !ok:
			d.Installed = append(d.Installed, n)
		case old != v:
			d.Upgraded = append(d.Upgraded, fmt.Sprintf("%s %s → %s", n, strings.Split(old, "_")[0], strings.Split(v, "_")[0]))
		}
	}
	for _, t := range []struct {
		root string
		debs []string
	}{{d.A, debsA}, {d.B, debsB}} {
		if err := unpackDebs(ctx, t.root, t.debs, logPath); err != nil {
			return err
		}
		if err := writeSources(t.root, d.Mirror, d.Security); err != nil {
			return err
		}
		if err := trimRootfs(t.root); err != nil {
			return err
		}
	}
	for _, sub := range []string{"debs-A", "debs-B"} {
		if err := os.RemoveAll(filepath.Join(dir, sub)); err != nil {
			return err
		}
	}
	return nil
}

// unpackDebs extracts the packages into root and writes the dpkg database dpkg would have: a
// status paragraph and the md5sums and conffiles of each.
func unpackDebs(ctx context.Context, root string, debs []string, logPath string) error {
	c := command{logPath: logPath, limit: 2 * time.Minute}
	info := filepath.Join(root, "var", "lib", "dpkg", "info")
	if err := os.MkdirAll(info, 0o755); err != nil {
		return err
	}
	var status strings.Builder
	for _, deb := range debs {
		if err := c.run(ctx, "dpkg-deb", "-x", deb, root); err != nil {
			return err
		}
		ctl, err := c.output(ctx, "dpkg-deb", "-f", deb)
		if err != nil {
			return err
		}
		name, _, _ := strings.Cut(filepath.Base(deb), "_")
		lines := strings.Split(strings.TrimSpace(string(ctl)), "\n")
		for i, l := range lines {
			status.WriteString(l + "\n")
			if i == 0 {
				status.WriteString("Status: install ok installed\n")
			}
		}
		status.WriteString("\n")
		tmp, err := os.MkdirTemp("", "deltabench-ctl-")
		if err != nil {
			return err
		}
		err = c.run(ctx, "dpkg-deb", "-e", deb, tmp)
		for _, f := range []string{"md5sums", "conffiles"} {
			if err == nil {
				if _, serr := os.Stat(filepath.Join(tmp, f)); serr == nil {
					err = copyFile(filepath.Join(tmp, f), filepath.Join(info, name+"."+f), 0o644)
				}
			}
		}
		os.RemoveAll(tmp)
		if err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(root, "var", "lib", "dpkg", "status"), []byte(status.String()), 0o644)
}

// aptEnv is the environment of apt, dpkg and debootstrap: non-interactive, C locale, this
// process's proxies if any.
func aptEnv() []string {
	env := []string{"DEBIAN_FRONTEND=noninteractive", "LC_ALL=C", "LANG=C", "HOME=/root",
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasSuffix(strings.ToLower(k), "_proxy") {
			env = append(env, kv)
		}
	}
	return env
}

// removeTree removes a tree that debootstrap or a chroot may have mounted things into: the
// mounts go first, and nothing is removed while one is left.
func removeTree(p string) error {
	if err := unmountUnder(p); err != nil {
		return err
	}
	return os.RemoveAll(p)
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, b, mode)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
