package tardelta

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Test data generation: trees of files, random edits, and tar writers that
// cover the formats the scanner must understand, including entries that
// archive/tar cannot write (GNU and PAX sparse files, non-zero padding).

type tfile struct {
	name   string
	typ    byte // tar typeflag; 'S' = old GNU sparse, 'P' = PAX 1.0 sparse, 'Q' = PAX 0.1 sparse
	data   []byte
	link   string
	xattrs map[string]string
	mode   int64
	mtime  int64
	frags  []frag // sparse files: data fragments (data is the logical content)
}

type frag struct{ off, n int64 }

type tree []tfile

func (t tree) clone() tree {
	out := make(tree, len(t))
	copy(out, t)
	return out
}

var vocabulary = strings.Fields(`the of and to in is that for it as with was on be by this are or
from at an not which have has but all were when can more one been if there will no their would so
func return err nil package import struct type var const interface map string int byte error range
include define static void char unsigned long while else case break default switch license copyright`)

// textData produces compressible, source-like text.
func textData(rng *rand.Rand, n int) []byte {
	var b bytes.Buffer
	b.Grow(n + 16)
	col := 0
	for b.Len() < n {
		w := vocabulary[rng.IntN(len(vocabulary))]
		if rng.IntN(9) == 0 {
			w = strconv.Itoa(rng.IntN(100000))
		}
		b.WriteString(w)
		col += len(w) + 1
		if col > 60+rng.IntN(30) {
			b.WriteByte('\n')
			col = 0
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()[:n]
}

// binData produces binary-like data: random runs mixed with repeated
// chunks, compressing to roughly half.
func binData(rng *rand.Rand, n int) []byte {
	src := rand.NewChaCha8(seedFrom(rng))
	out := make([]byte, n+256)
	for o := 0; o < n; {
		k := 16 + rng.IntN(240)
		if o > 1024 && rng.IntN(2) == 0 {
			start := rng.IntN(o - k)
			copy(out[o:o+k], out[start:start+k])
		} else {
			_, _ = src.Read(out[o : o+k])
		}
		o += k
	}
	return out[:n]
}

func randData(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(seedFrom(rng)).Read(b)
	return b
}

func seedFrom(rng *rand.Rand) (s [32]byte) {
	for i := range s {
		s[i] = byte(rng.Uint32())
	}
	return s
}

func randContent(rng *rand.Rand, n int) []byte {
	switch rng.IntN(4) {
	case 0:
		return binData(rng, n)
	case 1:
		return randData(rng, n)
	default:
		return textData(rng, n)
	}
}

// randSize returns a roughly log-uniform size up to max.
func randSize(rng *rand.Rand, max int) int {
	if rng.IntN(20) == 0 {
		return 0
	}
	bits := rng.IntN(20) + 1
	n := rng.IntN(1 << bits)
	return min(n, max)
}

func randName(rng *rand.Rand, depth int) string {
	var parts []string
	for i := 0; i < depth; i++ {
		parts = append(parts, vocabulary[rng.IntN(len(vocabulary))]+strconv.Itoa(rng.IntN(50)))
	}
	return strings.Join(parts, "/")
}

func longName(rng *rand.Rand, n int) string {
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(vocabulary[rng.IntN(len(vocabulary))])
		b.WriteByte("/_-"[rng.IntN(3)])
	}
	return strings.TrimRight(b.String()[:n], "/") + "x"
}

// randomTree builds a tree of about n entries with contents up to maxSize.
func randomTree(rng *rand.Rand, n, maxSize int) tree {
	var t tree
	seen := map[string]bool{}
	for len(t) < n {
		f := randomFile(rng, maxSize)
		if seen[f.name] {
			continue
		}
		seen[f.name] = true
		t = append(t, f)
	}
	// Some links to existing files.
	for i := 0; i < n/20; i++ {
		target := t[rng.IntN(len(t))]
		typ := byte(tar.TypeSymlink)
		if target.typ == tar.TypeReg && rng.IntN(2) == 0 {
			typ = tar.TypeLink
		}
		t = append(t, tfile{name: target.name + ".link" + strconv.Itoa(i), typ: typ, link: target.name, mode: 0o777})
	}
	return t
}

func randomFile(rng *rand.Rand, maxSize int) tfile {
	f := tfile{mode: 0o644, mtime: 1600000000 + rng.Int64N(1e8)}
	switch r := rng.IntN(40); {
	case r < 3:
		f.typ = tar.TypeDir
		f.name = randName(rng, 1+rng.IntN(3)) + "/"
		f.mode = 0o755
		return f
	case r < 5:
		f.name = longName(rng, 101+rng.IntN(300))
	case r < 6:
		f.typ = 'S'
	case r < 7:
		f.typ = 'P'
	case r < 8:
		f.typ = 'Q'
	}
	if f.name == "" {
		f.name = randName(rng, 1+rng.IntN(4)) + "." + []string{"go", "c", "so", "txt", "bin"}[rng.IntN(5)]
	}
	if f.typ == 0 {
		f.typ = tar.TypeReg
	}
	if rng.IntN(15) == 0 {
		f.xattrs = map[string]string{"user.test": string(randData(rng, 1+rng.IntN(40))), "security.capability": "\x01\x00\x00\x02"}
	}
	if f.typ == 'S' || f.typ == 'P' || f.typ == 'Q' {
		f.data, f.frags = sparseData(rng, 1+randSize(rng, maxSize))
		return f
	}
	f.data = randContent(rng, randSize(rng, maxSize))
	return f
}

// sparseData returns a logical content with holes and its data fragments.
func sparseData(rng *rand.Rand, size int) ([]byte, []frag) {
	data := make([]byte, size)
	var frags []frag
	nfr := rng.IntN(8)
	if rng.IntN(4) == 0 {
		nfr = 4 + rng.IntN(40) // forces GNU extension blocks
	}
	off := int64(0)
	for i := 0; i < nfr && off < int64(size); i++ {
		off += rng.Int64N(int64(size)/int64(nfr+1) + 1)
		if off >= int64(size) {
			break
		}
		n := 1 + rng.Int64N(min(int64(size)-off, 4096))
		copy(data[off:off+n], randContent(rng, int(n)))
		frags = append(frags, frag{off, n})
		off += n + 1
	}
	if len(frags) == 0 {
		n := min(int64(size), 100)
		copy(data[:n], randContent(rng, int(n)))
		frags = append(frags, frag{0, n})
	}
	return data, frags
}

// mutate applies about k random edits of every kind to a copy of t.
func mutate(rng *rand.Rand, t tree, k int) tree {
	t = t.clone()
	for i := 0; i < k && len(t) > 0; i++ {
		j := rng.IntN(len(t))
		f := t[j]
		switch rng.IntN(11) {
		case 0: // add
			t = append(t, randomFile(rng, 64<<10))
		case 1: // remove
			t = append(t[:j], t[j+1:]...)
		case 2: // rename / move
			f.name = randName(rng, 2) + "/moved-" + strconv.Itoa(i)
			t[j] = f
		case 3: // small edit
			if len(f.data) > 0 && f.frags == nil {
				d := bytes.Clone(f.data)
				p := rng.IntN(len(d))
				d[p] ^= byte(1 + rng.IntN(255))
				f.data = d
			}
			t[j] = f
		case 4: // append
			if f.frags == nil && f.typ == tar.TypeReg {
				f.data = append(bytes.Clone(f.data), randContent(rng, 1+rng.IntN(5000))...)
			}
			t[j] = f
		case 5: // truncate
			if len(f.data) > 0 && f.frags == nil {
				f.data = f.data[:rng.IntN(len(f.data))]
			}
			t[j] = f
		case 6: // insert in the middle
			if len(f.data) > 0 && f.frags == nil {
				p := rng.IntN(len(f.data))
				d := append(bytes.Clone(f.data[:p]), randContent(rng, 1+rng.IntN(100))...)
				f.data = append(d, f.data[p:]...)
			}
			t[j] = f
		case 7: // metadata only
			f.mtime++
			f.mode ^= 0o100
			t[j] = f
		case 8: // duplicate under another name
			f.name += ".copy" + strconv.Itoa(i)
			t = append(t, f)
		case 9: // replace entirely
			if f.frags == nil && f.typ == tar.TypeReg {
				f.data = randContent(rng, len(f.data))
			}
			t[j] = f
		case 10: // shuffle order a little
			o := rng.IntN(len(t))
			t[j], t[o] = t[o], t[j]
		}
	}
	return t
}

type tarOpts struct {
	format     tar.Format // zero: archive/tar's choice
	trailing   []byte     // bytes after the end-of-archive marker
	blocking   bool       // pad the archive to a multiple of 10240 bytes (GNU tar)
	dirtyPad   bool       // non-zero padding after regular file content
	noEOF      bool       // omit the end-of-archive blocks
	globalPAX  bool       // start with a PAX global header
	sortByName bool
}

func buildTar(t tree, o tarOpts) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if o.sortByName {
		t = t.clone()
		sort.Slice(t, func(i, j int) bool { return t[i].name < t[j].name })
	}
	if o.globalPAX {
		must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "generated"}}))
	}
	for i, f := range t {
		switch f.typ {
		case 'S', 'P', 'Q':
			must(tw.Flush())
			buf.Write(rawSparse(f))
			continue
		}
		if o.dirtyPad && f.typ == tar.TypeReg && len(f.data)%blockSize != 0 && i%3 == 0 {
			must(tw.Flush())
			buf.Write(rawEntry(f.name, '0', f.data, 0o644, f.mtime, true))
			continue
		}
		h := &tar.Header{
			Name:     f.name,
			Typeflag: f.typ,
			Linkname: f.link,
			Mode:     f.mode,
			Size:     int64(len(f.data)),
			ModTime:  time.Unix(f.mtime, 0),
			Uid:      1000,
			Gid:      1000,
			Uname:    "user",
			Gname:    "user",
			Format:   o.format,
		}
		if f.typ != tar.TypeReg {
			h.Size = 0
		}
		if len(f.xattrs) > 0 {
			h.PAXRecords = map[string]string{}
			for k, v := range f.xattrs {
				h.PAXRecords["SCHILY.xattr."+k] = v
			}
			if h.Format == tar.FormatGNU || h.Format == tar.FormatUSTAR {
				h.Format = tar.FormatPAX
			}
		}
		if h.Format == tar.FormatUSTAR && (len(h.Name) > 100 || len(h.Linkname) > 100) {
			h.Format = 0
		}
		must(tw.WriteHeader(h))
		if h.Size > 0 {
			_, err := tw.Write(f.data)
			must(err)
		}
	}
	if o.noEOF {
		must(tw.Flush())
	} else {
		must(tw.Close())
	}
	if o.blocking {
		for buf.Len()%10240 != 0 {
			buf.WriteByte(0)
		}
	}
	buf.Write(o.trailing)
	return buf.Bytes()
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// rawHeader builds one header block. gnu selects the GNU magic (needed for
// old sparse headers), otherwise POSIX ustar.
func rawHeader(name string, typ byte, size int64, mode, mtime int64, gnu bool) []byte {
	b := make([]byte, blockSize)
	copy(b[0:100], name)
	putOctal(b[100:108], mode)
	putOctal(b[108:116], 1000)
	putOctal(b[116:124], 1000)
	putOctal(b[124:136], size)
	putOctal(b[136:148], mtime)
	b[156] = typ
	if gnu {
		copy(b[257:265], "ustar  \x00")
	} else {
		copy(b[257:265], "ustar\x0000")
	}
	copy(b[265:297], "user")
	copy(b[297:329], "user")
	return b
}

func putOctal(f []byte, v int64) {
	s := strconv.FormatInt(v, 8)
	for len(s) < len(f)-1 {
		s = "0" + s
	}
	copy(f, s)
	f[len(f)-1] = 0
}

func setChecksum(b []byte) {
	copy(b[148:156], "        ")
	var sum int64
	for _, c := range b[:blockSize] {
		sum += int64(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

func padTo(b []byte, dirty bool) []byte {
	for len(b)%blockSize != 0 {
		if dirty {
			b = append(b, 'P')
		} else {
			b = append(b, 0)
		}
	}
	return b
}

// rawEntry writes a plain entry by hand, optionally with non-zero padding.
func rawEntry(name string, typ byte, data []byte, mode, mtime int64, dirtyPad bool) []byte {
	h := rawHeader(name, typ, int64(len(data)), mode, mtime, false)
	setChecksum(h)
	return padTo(append(h, data...), dirtyPad)
}

func paxBlock(name string, recs [][2]string) []byte {
	var content []byte
	for _, kv := range recs {
		rec := " " + kv[0] + "=" + kv[1] + "\n"
		n := len(rec)
		for {
			l := len(strconv.Itoa(n)) + len(rec)
			if l == n {
				break
			}
			n = l
		}
		content = append(content, strconv.Itoa(n)+rec...)
	}
	h := rawHeader(name, 'x', int64(len(content)), 0o644, 0, false)
	setChecksum(h)
	return padTo(append(h, content...), false)
}

// rawSparse writes a sparse file in old GNU ('S'), PAX 1.0 ('P') or PAX 0.1
// ('Q') form.
func rawSparse(f tfile) []byte {
	var phys []byte
	for _, fr := range f.frags {
		phys = append(phys, f.data[fr.off:fr.off+fr.n]...)
	}
	real := int64(len(f.data))
	switch f.typ {
	case 'S':
		h := rawHeader(f.name, 'S', int64(len(phys)), 0o644, f.mtime, true)
		putOctal(h[483:495], real)
		put := func(dst []byte, fr frag) {
			putOctal(dst[0:12], fr.off)
			putOctal(dst[12:24], fr.n)
		}
		frags := f.frags
		for i := 0; i < 4 && len(frags) > 0; i++ {
			put(h[386+24*i:], frags[0])
			frags = frags[1:]
		}
		var ext []byte
		if len(frags) > 0 {
			h[482] = 1
		}
		for len(frags) > 0 {
			e := make([]byte, blockSize)
			for i := 0; i < 21 && len(frags) > 0; i++ {
				put(e[24*i:], frags[0])
				frags = frags[1:]
			}
			if len(frags) > 0 {
				e[504] = 1
			}
			ext = append(ext, e...)
		}
		setChecksum(h)
		out := append(h, ext...)
		return padTo(append(out, phys...), false)
	case 'P':
		var m []byte
		m = append(m, strconv.Itoa(len(f.frags))+"\n"...)
		for _, fr := range f.frags {
			m = append(m, fmt.Sprintf("%d\n%d\n", fr.off, fr.n)...)
		}
		m = padTo(m, false)
		body := append(m, phys...)
		out := paxBlock("./PaxHeaders/x", [][2]string{
			{"GNU.sparse.major", "1"}, {"GNU.sparse.minor", "0"},
			{"GNU.sparse.name", f.name}, {"GNU.sparse.realsize", strconv.FormatInt(real, 10)},
		})
		h := rawHeader("GNUSparseFile.0/x", '0', int64(len(body)), 0o644, f.mtime, false)
		setChecksum(h)
		out = append(out, h...)
		return padTo(append(out, body...), false)
	default: // 'Q'
		var mp []string
		for _, fr := range f.frags {
			mp = append(mp, strconv.FormatInt(fr.off, 10), strconv.FormatInt(fr.n, 10))
		}
		out := paxBlock("./PaxHeaders/y", [][2]string{
			{"GNU.sparse.size", strconv.FormatInt(real, 10)},
			{"GNU.sparse.numblocks", strconv.Itoa(len(f.frags))},
			{"GNU.sparse.map", strings.Join(mp, ",")},
			{"path", f.name},
		})
		h := rawHeader("sparse-q", '0', int64(len(phys)), 0o644, f.mtime, false)
		setChecksum(h)
		out = append(out, h...)
		return padTo(append(out, phys...), false)
	}
}

// toyExec is a toy executable: an ELF magic, then functions of code bytes
// (a small opcode alphabet, NUL-rich like real code) holding absolute
// addresses of other functions. Inserting or removing a function moves all
// later ones, so every address pointing past the change shifts, as in a
// rebuilt binary: the content bsdiff is for.
type toyExec struct {
	funcs [][]byte
	refs  [][]execRef
}

type execRef struct{ at, target int }

func newToyExec(rng *rand.Rand, nfuncs int) *toyExec {
	x := &toyExec{}
	for range nfuncs {
		x.addFunc(rng, len(x.funcs), nfuncs)
	}
	return x
}

// addFunc inserts a function at index at. Like real code, it mostly calls
// functions nearby (its package), sometimes anywhere.
func (x *toyExec) addFunc(rng *rand.Rand, at, nfuncs int) {
	code := make([]byte, 16+rng.IntN(200))
	var refs []execRef
	for i := 0; i < len(code); {
		if i+5 <= len(code) && rng.IntN(5) == 0 {
			target := at + rng.IntN(64) - 32
			if rng.IntN(8) == 0 {
				target = rng.IntN(nfuncs)
			}
			code[i] = 0xe8
			refs = append(refs, execRef{at: i + 1, target: max(target, 0)})
			i += 5
			continue
		}
		code[i] = []byte{0x00, 0x00, 0x48, 0x89, 0x8b, 0x0f, 0x24, 0xc3}[rng.IntN(8)]
		i++
	}
	if at < len(x.funcs) {
		// Calls to the functions that move up keep calling them.
		for _, rs := range x.refs {
			for i := range rs {
				if rs[i].target >= at {
					rs[i].target++
				}
			}
		}
	}
	x.funcs = append(x.funcs[:at], append([][]byte{code}, x.funcs[at:]...)...)
	x.refs = append(x.refs[:at], append([][]execRef{refs}, x.refs[at:]...)...)
}

func (x *toyExec) render() []byte {
	out := []byte("\x7fELF\x02\x01\x01\x00")
	addr := make([]uint32, len(x.funcs))
	size := len(out)
	for i, f := range x.funcs {
		addr[i] = 0x401000 + uint32(size)
		size += len(f)
	}
	for i, f := range x.funcs {
		start := len(out)
		out = append(out, f...)
		for _, r := range x.refs[i] {
			binary.LittleEndian.PutUint32(out[start+r.at:], addr[r.target%len(addr)])
		}
	}
	return out
}

// rebuild returns a copy of x with k functions inserted or edited.
func (x *toyExec) rebuild(rng *rand.Rand, k int) *toyExec {
	y := &toyExec{}
	for i := range x.funcs {
		y.funcs = append(y.funcs, bytes.Clone(x.funcs[i]))
		y.refs = append(y.refs, append([]execRef(nil), x.refs[i]...))
	}
	for range k {
		if rng.IntN(2) == 0 {
			y.addFunc(rng, rng.IntN(len(y.funcs)/4+1), len(y.funcs))
		} else {
			f := y.funcs[rng.IntN(len(y.funcs))]
			f[rng.IntN(len(f))] ^= 0x55
		}
	}
	return y
}
