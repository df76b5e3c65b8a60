package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"
)

// report is everything the run measured, printed as Markdown.
type report struct {
	o      options
	src    *sources
	binary string
	images []*images
	rows   []*row
	total  time.Duration
}

// row is one scenario with one compressor: its measurements, one per column.
type row struct {
	sc      *scenario
	comp    compressor
	results []*result
	deltaNA bool // the child does not know sync.delta
}

func (r *row) result(mode string) *result {
	for _, res := range r.results {
		if res.mode == mode {
			return res
		}
	}
	return nil
}

func (rep *report) write(w io.Writer) {
	o := rep.o
	link := "loopback speed (no bandwidth limit)"
	if o.bandwidthMiB > 0 {
		link = fmt.Sprintf("%g MiB/s each way", o.bandwidthMiB)
	}
	fmt.Fprintf(w, "\n## Delta sync benchmark (`make bench-delta`)\n\n")
	child := "a mirror (parent.url)"
	if o.child == childConnected {
		child = "a connected registry (connection string)"
	}
	if o.waitPrepared {
		child += ", asked for its pass once the parent had prepared the new image's deltas from its inventory (-wait-prepared: the sync wall time holds no computation of the parent's)"
	}
	fmt.Fprintf(w, "Outpost %s as parent and child; the child, %s, syncs through a byte-counting link on 127.0.0.1 at %s. "+
		"%d CPUs, %s. Bytes over the link are both directions, from asking the child for a pass until it serves the new tag "+
		"with the parent's digest; the ratio is to the new image's size (manifest, config, layers as pushed). Every scenario "+
		"starts from a fresh parent and child; the child first syncs the images it held before, then the counters are reset.\n\n",
		rep.binary, child, link, runtime.NumCPU(), time.Now().UTC().Format("2006-01-02"))

	defaultOnly := !o.deltaKey
	layerHdr, deltaHdr := "layer transfer", "Outpost"
	if defaultOnly {
		layerHdr, deltaHdr = "layer transfer (computed)", "Outpost (default configuration)"
	}
	fmt.Fprintf(w, "### Bytes over the link ÷ image size\n\n")
	fmt.Fprintf(w, "| scenario | compressor | image | %s | %s | case study: layer → delta | target | Outpost vs target |\n", layerHdr, deltaHdr)
	fmt.Fprintf(w, "|---|---|---:|---:|---:|---|---|---|\n")
	for _, r := range rep.rows {
		size := r.sc.after.img.Size
		cell := func(res *result) string {
			if res == nil {
				return "—"
			}
			if res.verifyErr != nil {
				return "WRONG BLOBS"
			}
			return fmt.Sprintf("%s (%s)", fmtBytes(res.bytes()), fmtPct(float64(res.bytes())/float64(size)))
		}
		layer := cell(r.result(modeLayer))
		if defaultOnly {
			b := r.sc.layerTransferBytes()
			layer = fmt.Sprintf("%s (%s)", fmtBytes(b), fmtPct(float64(b)/float64(size)))
		}
		delta := r.result(modeDelta)
		if defaultOnly {
			delta = r.result(modeDefault)
		}
		dcell, verdict := cell(delta), "—"
		switch {
		case r.deltaNA:
			dcell, verdict = "delta not available", "not measured"
		case delta != nil && delta.verifyErr != nil:
			verdict = "MISSED (wrong blobs)"
		case delta != nil:
			verdict = "MISSED"
			if r.sc.met(delta.bytes(), float64(delta.bytes())/float64(size)) {
				verdict = "met"
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s → %s | %s | %s |\n", r.sc.label, r.comp.key, fmtBytes(size), layer, dcell,
			fmtPctNum(r.sc.caseLayer), fmtPctNum(r.sc.caseDelta), r.sc.target, verdict)
	}

	fmt.Fprintf(w, "\n### The child during the measured sync\n\n")
	fmt.Fprintf(w, "Apply is the child's own rebuild of the layers it took as deltas, from its log: what is left of decompressing "+
		"the bases (the child starts on the layer at the same position while the parent plans, and on the others during "+
		"the download), applying the delta, recompressing with the layer's recipe and verifying the digest; its throughput is in MiB of the "+
		"rebuilt layers (compressed, as pushed) and of their tars per second. The sync wall time also holds the transfer and "+
		"the parent's first computation of each delta, which later children asking for the same delta do not wait for (its CPU "+
		"time, which also counts receiving the push, is beside the child's); image and missing-layer MiB/s are per second of "+
		"it. The parent runs at the lowest CPU priority (nice 19): parent and child share this machine's two cores, as in a "+
		"fleet they would not, and the child's rebuild of one layer goes first when the parent is computing another's delta. "+
		"Peak RSS is the child's VmHWM, reset after the before state; the parent's is reset before the push, so it holds receiving "+
		"the push and computing the deltas. Targets: apply ≥ 30 MiB/s on 2 cores, ≤ 128 MiB RSS.\n\n")
	fmt.Fprintf(w, "| scenario | compressor | column | sync wall time | image MiB/s | missing layers MiB/s | apply | apply MiB/s of layer / tar | child CPU | parent CPU | child peak RSS | parent peak RSS | blobs verified |\n")
	fmt.Fprintf(w, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, r := range rep.rows {
		missing := r.sc.layerTransferBytes()
		for _, res := range r.results {
			col := map[string]string{modeLayer: "layer transfer", modeDelta: "Outpost", modeDefault: "Outpost (default)"}[res.mode]
			if res.keyDropped {
				col = "layer transfer (no sync.delta key)"
			}
			ver := fmt.Sprintf("%d, identical", res.verified)
			if res.verifyErr != nil {
				ver = "WRONG: " + shorten(res.verifyErr.Error(), 80)
			}
			rss := fmtMiB(res.peakRSS)
			if res.rssNote != "" {
				rss += "*"
			}
			secs := res.wall.Seconds()
			apply, applyRate := "—", "—"
			if rb := res.rebuilt; rb.layers > 0 && rb.time > 0 {
				apply = fmt.Sprintf("%s (%d layer(s))", fmtDur(rb.time), rb.layers)
				applyRate = fmt.Sprintf("%.1f / %.1f", float64(rb.layerBytes)/mib/rb.time.Seconds(), float64(rb.tar)/mib/rb.time.Seconds())
			}
			prss := "—"
			if res.parentPeakRSS > 0 {
				prss = fmtMiB(res.parentPeakRSS)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %.1f | %.1f | %s | %s | %s | %s | %s | %s | %s |\n", r.sc.label, r.comp.key, col, fmtDur(res.wall),
				float64(r.sc.after.img.Size)/mib/secs, float64(missing)/mib/secs, apply, applyRate, fmtDur(res.cpu), fmtDur(res.parentCPU), rss, prss, ver)
		}
	}

	fmt.Fprintf(w, "\n### Images\n\n")
	fmt.Fprintf(w, "| layer | entries | tar |")
	for _, im := range rep.images {
		fmt.Fprintf(w, " %s |", im.comp.key)
	}
	fmt.Fprintf(w, "\n|---|---:|---:|%s\n", strings.Repeat("---:|", len(rep.images)))
	for _, name := range sortedKeys(rep.src.layers) {
		l := rep.src.layers[name]
		fmt.Fprintf(w, "| %s | %d | %s |", name, l.Entries, fmtBytes(l.Size))
		for _, im := range rep.images {
			if b := im.blobs[name]; b != nil {
				fmt.Fprintf(w, " %s (%.0f%%) |", fmtBytes(b.Size), 100*float64(b.Size)/float64(l.Size))
			} else {
				fmt.Fprintf(w, " — |")
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "\nImages (whole size, manifest + config + layers): ")
	var names []string
	if len(rep.images) > 0 {
		names = sortedKeys(rep.images[0].byKey)
	}
	var parts []string
	for _, n := range names {
		var sizes []string
		for _, im := range rep.images {
			if img := im.byKey[n]; img != nil {
				sizes = append(sizes, fmt.Sprintf("%s %s", im.comp.key, fmtBytes(img.Size)))
			}
		}
		parts = append(parts, fmt.Sprintf("%s: %s", n, strings.Join(sizes, ", ")))
	}
	fmt.Fprintf(w, "%s.\n", strings.Join(parts, "; "))

	fmt.Fprintf(w, "\n### How the images were made\n\n")
	d := rep.src.debian
	fmt.Fprintf(w, "- **debian-A**: %s of bookworm minbase from %s, trimmed as Debian's container images are (no .debs, apt lists, logs, device nodes or host files), owners kept.", d.Method, d.Mirror)
	if d.Fallback != "" {
		fmt.Fprintf(w, " debootstrap was not used: %s.", d.Fallback)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "- **debian-B**, the base-image update: ")
	if d.Method == "debootstrap" {
		fmt.Fprintf(w, "a copy of A in which `apt-get update && apt-get upgrade` ran in a chroot against bookworm-updates and bookworm-security (%s), then the same trimming.", d.Security)
	} else {
		fmt.Fprintf(w, "the same package set at the newest versions the mirror has (updates, security) plus %s, unpacked the same way.", strings.Join(debianExtra, ", "))
	}
	if len(d.Upgraded) > 0 {
		fmt.Fprintf(w, " Upgraded: %s.", strings.Join(d.Upgraded, ", "))
	}
	if len(d.Installed) > 0 {
		fmt.Fprintf(w, " Installed: %s.", strings.Join(d.Installed, ", "))
	}
	fmt.Fprintf(w, " dpkg rewrote /var/lib/dpkg, ldconfig /etc/ld.so.cache and /var/cache/ldconfig, with new mtimes. A → B: %s.\n", d.Diff)
	for _, g := range []struct {
		name string
		app  *goApp
	}{{"outpost-v1", rep.src.goV1}, {"outpost-v2", rep.src.goV2}, {"outpost-v1-next", rep.src.goV1Next}} {
		if g.app != nil {
			strip := "-s -w "
			if g.app.Unstripped {
				strip = ""
			}
			fmt.Fprintf(w, "- **%s**: Outpost at %s (%q), `CGO_ENABLED=0 go build -trimpath -ldflags '%s-X …'`: /usr/local/bin/outpost (%s), /etc/outpost/config.yaml, /usr/share/doc/outpost; owner 0:0.\n",
				g.name, g.app.Commit[:12], shorten(g.app.Subject, 60), strip, fmtBytes(g.app.BinSize))
		}
	}
	for _, n := range []struct {
		name string
		app  *npmApp
	}{{"npm-v1", rep.src.npmV1}, {"npm-v2", rep.src.npmV2}} {
		if n.app != nil {
			fmt.Fprintf(w, "- **%s**: `npm install --no-audit --no-fund --ignore-scripts` of %s under /app, with package.json, the lock file and a server.js: %d files, %s; owner 0:0.\n",
				n.name, strings.Join(n.app.Deps, " "), n.app.Files, fmtBytes(n.app.Bytes))
		}
	}
	fmt.Fprintf(w, "- Layer tars as Docker and BuildKit write them (archive/tar, lexical order, real modes, mtimes to the second, numeric owners, hard links, PAX only where needed); compressors: ")
	var cl []string
	for _, im := range rep.images {
		cl = append(cl, fmt.Sprintf("%s = %s", im.comp.key, im.comp.label))
	}
	fmt.Fprintf(w, "%s. OCI manifests and configs by go-containerregistry around the exact compressed bytes.\n", strings.Join(cl, "; "))
	fmt.Fprintf(w, "- In the base-image update the application layer is the same blob in both images (the same files give the same tar and the same compressed bytes, as with a reproducible build), so layer transfer resends only the base layer; the case study's 100%% resent every layer.\n")
	fmt.Fprintf(w, "- Case study: an Azure architecture case study (DELTA.md), layer-level transfer → their full-image binary delta, whose digests changed; targets from issue 7.\n")

	fmt.Fprintf(w, "\n### Details\n\n")
	for _, r := range rep.rows {
		fmt.Fprintf(w, "- %s, %s: %s → %s, %s; layer transfer must send %s (manifest and the blobs the device lacks)\n",
			r.sc.label, r.comp.key, beforeNames(r.sc), r.sc.after.img.Name, fmtBytes(r.sc.after.img.Size), fmtBytes(r.sc.layerTransferBytes()))
		for _, res := range r.results {
			fmt.Fprintf(w, "  - %s: %s down, %s up; push to the parent %s", modeLabel(res.mode), fmtBytes(res.bytesDown), fmtBytes(res.bytesUp), fmtDur(res.pushTime))
			if res.keyDropped {
				fmt.Fprintf(w, "; ran without sync.delta (the node refused the key)")
			}
			if res.pass != "" {
				fmt.Fprintf(w, "; pass: %s", res.pass)
			}
			if res.rssNote != "" {
				fmt.Fprintf(w, "; *RSS: %s", res.rssNote)
			}
			fmt.Fprintln(w)
			for _, n := range res.notes {
				fmt.Fprintf(w, "    - %s\n", n)
			}
		}
	}
	fmt.Fprintf(w, "\nWhole run %s (images %s of it).\n", fmtDur(rep.total), fmtDur(rep.src.buildTime))
}

func beforeNames(s *scenario) string {
	if len(s.before) == 0 {
		return "nothing"
	}
	var n []string
	for _, b := range s.before {
		n = append(n, b.img.Name)
	}
	return strings.Join(n, ", ")
}

// fmtPct prints a ratio as a percentage with the digits small ratios need.
func fmtPct(r float64) string { return fmtPctNum(100 * r) }

func fmtPctNum(p float64) string {
	switch {
	case p >= 10:
		return fmt.Sprintf("%.1f%%", p)
	case p >= 1:
		return fmt.Sprintf("%.2f%%", p)
	case p >= 0.01:
		return fmt.Sprintf("%.3f%%", p)
	}
	return fmt.Sprintf("%.4f%%", p)
}

func fmtMiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/mib) }

// fmtBytes is fmtMiB, or KiB below 1 MiB.
func fmtBytes(n int64) string {
	if n < mib {
		return fmt.Sprintf("%.1f KiB", float64(n)/1024)
	}
	return fmtMiB(n)
}

// fmtDur rounds a duration for humans: to 0.01 s below 10 s, else to 0.1 s.
func fmtDur(d time.Duration) string {
	if d < 10*time.Second {
		return d.Round(10 * time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}
