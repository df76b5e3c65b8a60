package main

import (
	"bytes"
	"compress/flate"
	"io"
	"regexp"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// sample is compressible content of a few hundred KiB, more than one pgzip block of 64 KiB.
func sample() []byte {
	var b bytes.Buffer
	for i := range 20000 {
		b.WriteString("layer ")
		b.WriteString(strings.Repeat("x", i%17))
		b.WriteByte(byte(i))
	}
	return b.Bytes()
}

func runHelper(t *testing.T, in []byte, args ...string) (code int, stdout []byte, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, bytes.NewReader(in), &out, &errOut)
	return code, out.Bytes(), errOut.String()
}

// The gzip compressors write a bare deflate stream: it inflates to the input.
func TestDeflateBody(t *testing.T) {
	data := sample()
	for _, args := range [][]string{
		{"-compressor", "pgzip", "-level", "5", "-block", "65536", "-workers", "2"},
		{"-compressor", "klauspost-gzip", "-level", "9"},
		{"-compressor", "klauspost-gzip", "-level", "-2"},
	} {
		code, out, errOut := runHelper(t, data, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		got, err := io.ReadAll(flate.NewReader(bytes.NewReader(out)))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%v: the output does not inflate to the input (%v)", args, err)
		}
	}
}

// zstd: a whole frame that decodes to the input, whose first block holds the -lead bytes.
func TestZstdFrame(t *testing.T) {
	data := sample()
	code, out, errOut := runHelper(t, data, "-compressor", "klauspost-zstd", "-level", "2", "-checksum", "-lead", "8")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	got, err := dec.DecodeAll(out, nil)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the frame does not decode to the input (%v)", err)
	}
	// Magic, descriptor (checksum flag), window descriptor, then a raw block of 8 bytes.
	if len(out) < 9 || out[4] != 0x04 || out[6] != 8<<3 || out[7] != 0 || out[8] != 0 {
		t.Fatalf("frame starts %x; want a raw first block of 8 bytes", out[:min(len(out), 12)])
	}
	// The output does not depend on how many workers pgzip has.
	_, a, _ := runHelper(t, data, "-compressor", "pgzip", "-block", "65536", "-workers", "1")
	_, b, _ := runHelper(t, data, "-compressor", "pgzip", "-block", "65536", "-workers", "4")
	if !bytes.Equal(a, b) {
		t.Fatal("pgzip output depends on -workers")
	}
}

// Bad flags exit 2 with a message naming the flag.
func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "-compressor is required"},
		{[]string{"-compressor", "zlib"}, `-compressor "zlib"`},
		{[]string{"-compressor", "pgzip", "-level", "10"}, "-level 10"},
		{[]string{"-compressor", "pgzip", "-level", "-1"}, "-level -1"},
		{[]string{"-compressor", "pgzip", "-block", "16384"}, "-block 16384"},
		{[]string{"-compressor", "pgzip", "-workers", "0"}, "-workers 0"},
		{[]string{"-compressor", "pgzip", "-lead", "8"}, "zstd flags"},
		{[]string{"-compressor", "klauspost-zstd", "-level", "5"}, "-level 5"},
		{[]string{"-compressor", "klauspost-zstd", "-level", "2", "-window", "3000"}, "-window 3000"},
		{[]string{"-compressor", "klauspost-zstd", "-level", "2", "-lead", "131072"}, "-lead 131072"},
		{[]string{"-compressor", "pgzip", "extra"}, `unexpected argument "extra"`},
		{[]string{"-nosuchflag"}, "-nosuchflag"},
	} {
		code, out, errOut := runHelper(t, []byte("x"), tc.args...)
		if code != 2 || len(out) != 0 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, %d bytes out, stderr %q; want exit 2, nothing out, stderr naming %q", tc.args, code, len(out), errOut, tc.want)
		}
	}
}

// -version names the library versions built in (go.mod's, or the -modfile's), which outpost
// checks and names the output families after.
func TestVersion(t *testing.T) {
	code, out, _ := runHelper(t, nil, "-version")
	want := regexp.MustCompile(`^outpost-legacy-deflate klauspost/compress v1\.\d+\.\d+ klauspost/pgzip v1\.\d+\.\d+ zstd\n$`)
	if code != 0 || !want.Match(out) {
		t.Fatalf("-version: exit %d, %q; want it to match %s", code, out, want)
	}
}
