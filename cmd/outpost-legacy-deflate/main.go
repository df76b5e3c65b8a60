// Command outpost-legacy-deflate compresses its standard input with the klauspost/compress release its module file pins, one whose deflate or zstd output later releases changed, so that a node can reproduce layers written by the podman, buildah and skopeo builds that use it.
//
// A layer blob is rebuilt on a child by recompressing its tar into the exact bytes the
// builder wrote. podman, buildah and skopeo compress with klauspost/pgzip over
// klauspost/compress (zstd layers with its zstd encoder). Its releases changed their output
// several times: deflate at every level from 1 to 9 in v1.18.1; zstd in v1.16.4 (on long
// layers), v1.17.0 and v1.20.2 or v1.20.3. Go builds one version of a module into a binary,
// so each older version lives in a process of its own, built from this directory: with go.mod
// (v1.18.0: deflate of v1.15 to v1.18.0, zstd of v1.17 to v1.20.1) as outpost-legacy-deflate,
// and with -modfile=klauspost1.15.mod (v1.15.12, Debian 12's: zstd of v1.14 to v1.16.3) as
// outpost-legacy-deflate-klauspost1.15. outpost (internal/delta/recipe) runs the one whose
// output family a blob's recipe names.
//
// It reads the content on standard input and writes the deflate stream of the gzip member
// the library writes, without the gzip header and trailer (the caller replays the blob's own
// header verbatim and computes the trailer); for zstd, the whole frame:
//
//	outpost-legacy-deflate -compressor pgzip -level 5 -block 1048576 [-workers N]
//	outpost-legacy-deflate -compressor klauspost-gzip -level 5
//	outpost-legacy-deflate -compressor klauspost-zstd -level 2 -window 8388608 -checksum [-lead 8]
//	outpost-legacy-deflate -version
//
// For zstd, -level is the zstd.EncoderLevel (1 fastest to 4 best), -window the encoder window
// when it is not the level's default, and -lead the size of a first block ended early by a
// flush (containers/image writes its 8-byte compression probe before the rest). The output
// does not depend on -workers. Bad flags exit with status 2 and a message naming the flag.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
)

// version is what -version prints: the library versions this build pins, which outpost
// checks and names its output families after. " zstd" says the helper writes zstd frames.
func version() string {
	return "outpost-legacy-deflate klauspost/compress " + moduleVersion("github.com/klauspost/compress") +
		" klauspost/pgzip " + moduleVersion("github.com/klauspost/pgzip") + " zstd"
}

// moduleVersion returns the version of the module path built into this binary.
func moduleVersion(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == path {
				if m.Replace != nil {
					return m.Replace.Version
				}
				return m.Version
			}
		}
	}
	return "unknown"
}

// gzipHeaderLen is the size of the header both libraries write for a Header with no name,
// comment or extra field.
const gzipHeaderLen = 10

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("outpost-legacy-deflate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	compressor := fs.String("compressor", "", "pgzip, klauspost-gzip or klauspost-zstd")
	level := fs.Int("level", 5, "compression level: -2 to 9 for gzip, 1 to 4 for zstd")
	window := fs.Int("window", 0, "zstd window in bytes, a power of two from 1 KiB to 16 MiB (default: the level's)")
	checksum := fs.Bool("checksum", false, "end the zstd frame with a content checksum")
	lead := fs.Int("lead", 0, "zstd: bytes written and flushed as a block of their own before the rest")
	block := fs.Int("block", 1<<20, "pgzip block size in bytes (more than 16 KiB)")
	workers := fs.Int("workers", runtime.GOMAXPROCS(0), "pgzip blocks compressed at once (the output does not depend on it)")
	showVersion := fs.Bool("version", false, "print the library versions and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, version())
		return 0
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "outpost-legacy-deflate: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return usage("unexpected argument %q: the content is read from standard input", fs.Arg(0))
	}
	if *compressor == "klauspost-zstd" {
		return runZstd(stdin, stdout, stderr, *level, *window, *checksum, *lead, usage)
	}
	if *window != 0 || *checksum || *lead != 0 {
		return usage("-window, -checksum and -lead are zstd flags, not for -compressor %q", *compressor)
	}
	if *level < -2 || *level > 9 || *level == -1 {
		return usage("-level %d: want -2 (Huffman only), 0 (stored) or 1 to 9", *level)
	}
	out := &bodyWriter{w: bufio.NewWriterSize(stdout, 256<<10), skip: gzipHeaderLen}
	var zw io.WriteCloser
	switch *compressor {
	case "pgzip":
		if *block <= 16<<10 || *block > 32<<20 {
			return usage("-block %d: want more than 16 KiB and at most 32 MiB", *block)
		}
		if *workers < 1 {
			return usage("-workers %d: want at least 1", *workers)
		}
		w, err := pgzip.NewWriterLevel(out, *level)
		if err != nil {
			return usage("-level %d: %v", *level, err)
		}
		if err := w.SetConcurrency(*block, *workers); err != nil {
			return usage("-block %d: %v", *block, err)
		}
		zw = w
	case "klauspost-gzip":
		w, err := kgzip.NewWriterLevel(out, *level)
		if err != nil {
			return usage("-level %d: %v", *level, err)
		}
		zw = w
	case "":
		return usage("-compressor is required: pgzip, klauspost-gzip or klauspost-zstd")
	default:
		return usage("-compressor %q: want pgzip, klauspost-gzip or klauspost-zstd", *compressor)
	}
	if _, err := io.Copy(zw, stdin); err != nil {
		fmt.Fprintf(stderr, "outpost-legacy-deflate: %v\n", err)
		return 1
	}
	if err := zw.Close(); err != nil {
		fmt.Fprintf(stderr, "outpost-legacy-deflate: %v\n", err)
		return 1
	}
	if err := out.finish(); err != nil {
		fmt.Fprintf(stderr, "outpost-legacy-deflate: %v\n", err)
		return 1
	}
	return 0
}

// runZstd writes the zstd frame of stdin with the encoder configured as outpost's recipes
// configure the current one (internal/delta/recipe zstdOptions): the level, then the
// checksum, then the window only when it is not the level's default in current releases (4 or
// 8 MiB). Releases before v1.17.5 default to 16 and 32 MiB at the two best levels; a recipe
// gives those windows explicitly, which writes the same bytes, since WithWindowSize after the
// level changes nothing else when the window is at least the block size.
func runZstd(stdin io.Reader, stdout, stderr io.Writer, level, window int, checksum bool, lead int, usage func(string, ...any) int) int {
	if level < 1 || level > 4 {
		return usage("-level %d: want a zstd encoder level, 1 (fastest) to 4 (best)", level)
	}
	defaultWindow := 8 << 20
	if zstd.EncoderLevel(level) == zstd.SpeedFastest {
		defaultWindow = 4 << 20
	}
	if window == 0 {
		window = defaultWindow
	}
	if window < 1<<10 || window > 16<<20 || window&(window-1) != 0 {
		return usage("-window %d: want a power of two from 1 KiB to 16 MiB", window)
	}
	if lead < 0 || lead >= 128<<10 {
		return usage("-lead %d: want 0 to 131071 bytes", lead)
	}
	opts := []zstd.EOption{zstd.WithEncoderLevel(zstd.EncoderLevel(level)), zstd.WithEncoderCRC(checksum), zstd.WithEncoderConcurrency(1)}
	if window != defaultWindow {
		opts = append(opts, zstd.WithWindowSize(window))
	}
	out := bufio.NewWriterSize(stdout, 256<<10)
	enc, err := zstd.NewWriter(out, opts...)
	if err != nil {
		return usage("zstd options: %v", err)
	}
	fail := func(err error) int {
		enc.Close()
		fmt.Fprintf(stderr, "outpost-legacy-deflate: %v\n", err)
		return 1
	}
	if lead > 0 {
		if _, err := io.CopyN(enc, stdin, int64(lead)); err != nil && err != io.EOF {
			return fail(err)
		}
		if err := enc.Flush(); err != nil {
			return fail(err)
		}
	}
	if _, err := io.Copy(enc, stdin); err != nil {
		return fail(err)
	}
	if err := enc.Close(); err != nil {
		return fail(err)
	}
	if err := out.Flush(); err != nil {
		fmt.Fprintf(stderr, "outpost-legacy-deflate: %v\n", err)
		return 1
	}
	return 0
}

// bodyWriter passes on a gzip member's deflate stream: it drops the header's first skip
// bytes and holds back the last 8 bytes written, the trailer, which finish discards.
type bodyWriter struct {
	w    *bufio.Writer
	skip int
	tail []byte // the last bytes written, at most 8
}

const trailerLen = 8

func (b *bodyWriter) Write(p []byte) (int, error) {
	n := len(p)
	if b.skip > 0 {
		k := min(b.skip, len(p))
		b.skip -= k
		p = p[k:]
	}
	// Everything but the last 8 bytes seen so far can go out.
	all := len(b.tail) + len(p)
	if out := all - trailerLen; out > 0 {
		fromTail := min(out, len(b.tail))
		if _, err := b.w.Write(b.tail[:fromTail]); err != nil {
			return 0, err
		}
		b.tail = b.tail[fromTail:]
		if _, err := b.w.Write(p[:out-fromTail]); err != nil {
			return 0, err
		}
		p = p[out-fromTail:]
	}
	b.tail = append(append(make([]byte, 0, trailerLen), b.tail...), p...)
	return n, nil
}

// finish flushes the stream; the trailer must have been seen whole.
func (b *bodyWriter) finish() error {
	if b.skip > 0 || len(b.tail) != trailerLen {
		return errors.New("the library wrote no complete gzip member")
	}
	return b.w.Flush()
}
