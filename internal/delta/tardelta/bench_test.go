package tardelta

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// benchTrees returns a ~64 MiB base tar and a target derived from it with
// realistic edits: most files unchanged, some edited in place, appended to
// or truncated, some renamed, removed or added, metadata touched.
var benchTrees = sync.OnceValues(func() ([]byte, []byte) {
	rng := rand.New(rand.NewPCG(2024, 1))
	var tr tree
	total := 0
	for i := 0; total < 64<<20; i++ {
		f := randomFile(rng, 1<<20)
		if f.frags != nil || f.typ == '5' {
			continue
		}
		f.name = "app/" + f.name + "-" + string(rune('a'+i%26))
		tr = append(tr, f)
		total += len(f.data)
	}
	base := buildTar(tr, tarOpts{})
	target := buildTar(mutate(rng, tr, len(tr)/10), tarOpts{})
	return base, target
})

func benchDelta(b *testing.B) (base, target, delta []byte) {
	base, target = benchTrees()
	idx, err := BuildIndex(bytes.NewReader(base))
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	st, err := Encode(context.Background(), bytes.NewReader(target), []Base{{Index: idx, Data: bytes.NewReader(base)}}, &buf, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("target %d bytes, delta %d (%.2f%%): copy %d, patch %d->%d, literal %d->%d, header %d->%d",
		st.TargetBytes, st.EncodedBytes, 100*float64(st.EncodedBytes)/float64(st.TargetBytes),
		st.CopyBytes, st.PatchIn, st.PatchOut, st.LiteralIn, st.LiteralOut, st.HeaderIn, st.HeaderOut)
	return base, target, buf.Bytes()
}

func BenchmarkEncode(b *testing.B) {
	base, target := benchTrees()
	idx, err := BuildIndex(bytes.NewReader(base))
	if err != nil {
		b.Fatal(err)
	}
	bases := []Base{{Index: idx, Data: bytes.NewReader(base)}}
	b.SetBytes(int64(len(target)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := Encode(context.Background(), bytes.NewReader(target), bases, io.Discard, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkApply(b *testing.B) {
	base, target, delta := benchDelta(b)
	bases := []SizedReaderAt{bytes.NewReader(base)}
	b.SetBytes(int64(len(target)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := Apply(context.Background(), bytes.NewReader(delta), bases, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBuildIndex(b *testing.B) {
	base, _ := benchTrees()
	b.SetBytes(int64(len(base)))
	for b.Loop() {
		if _, err := BuildIndex(bytes.NewReader(base)); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRealTars measures a delta between real tar files when
// TARDELTA_TARGET (and optionally TARDELTA_BASES, comma-separated) name
// them, e.g. two versions of an unpacked layer. With TARDELTA_DELTA=path and
// TARDELTA_MODE=encode or apply it runs only that half, keeping the delta in
// that file, so each side's peak memory can be measured on its own.
func TestRealTars(t *testing.T) {
	targetPath := os.Getenv("TARDELTA_TARGET")
	if targetPath == "" {
		t.Skip("set TARDELTA_TARGET (and TARDELTA_BASES) to measure real tars")
	}
	var bases []Base
	var readers []SizedReaderAt
	if s := os.Getenv("TARDELTA_BASES"); s != "" {
		for _, p := range strings.Split(s, ",") {
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			start := time.Now()
			idx, err := BuildIndex(f)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("index %s: %d entries in %v", p, len(idx.Entries), time.Since(start))
			bases = append(bases, Base{Index: idx, Data: f})
			readers = append(readers, io.NewSectionReader(f, 0, idx.Size))
		}
	}
	target, err := os.Open(targetPath)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	mode := os.Getenv("TARDELTA_MODE")
	var delta *os.File
	if p := os.Getenv("TARDELTA_DELTA"); p != "" && mode == "apply" {
		delta, err = os.Open(p)
	} else if p != "" {
		delta, err = os.Create(p)
	} else {
		delta, err = os.CreateTemp(t.TempDir(), "delta")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer delta.Close()
	var st Stats
	if mode != "apply" {
		start := time.Now()
		st, err = Encode(context.Background(), target, bases, delta, Options{})
		if err != nil {
			t.Fatal(err)
		}
		enc := time.Since(start)
		t.Logf("encode %v (%.1f MiB/s): %d -> %d bytes (%.3f%%)", enc, float64(st.TargetBytes)/enc.Seconds()/(1<<20), st.TargetBytes, st.EncodedBytes, 100*float64(st.EncodedBytes)/float64(st.TargetBytes))
		t.Logf("stats %+v", st)
		if mode == "encode" {
			return
		}
		if _, err := delta.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if _, err := target.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
	} else {
		fi, err := target.Stat()
		if err != nil {
			t.Fatal(err)
		}
		st.TargetBytes = fi.Size()
	}
	cmp := &compareWriter{r: target}
	start := time.Now()
	n, err := Apply(context.Background(), delta, readers, cmp)
	if err != nil {
		t.Fatal(err)
	}
	app := time.Since(start)
	t.Logf("apply %v (%.1f MiB/s)", app, float64(n)/app.Seconds()/(1<<20))
	if cmp.bad || n != st.TargetBytes {
		t.Fatalf("rebuilt target differs (at %d)", cmp.n)
	}
}

// compareWriter checks written bytes against a reader.
type compareWriter struct {
	r   io.Reader
	n   int64
	buf []byte
	bad bool
}

func (c *compareWriter) Write(p []byte) (int, error) {
	if len(c.buf) < len(p) {
		c.buf = make([]byte, len(p))
	}
	if _, err := io.ReadFull(c.r, c.buf[:len(p)]); err != nil || !bytes.Equal(c.buf[:len(p)], p) {
		c.bad = true
	}
	if !c.bad {
		c.n += int64(len(p))
	}
	return len(p), nil
}
