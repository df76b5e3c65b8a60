package tardelta_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"log"

	"github.com/outpost-registry/outpost/internal/delta/tardelta"
)

func makeTar(files map[string]string, order ...string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range order {
		body := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			log.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			log.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		log.Fatal(err)
	}
	return buf.Bytes()
}

func Example() {
	old := makeTar(map[string]string{"etc/motd": "hello", "bin/tool": string(bytes.Repeat([]byte("code "), 10000))}, "etc/motd", "bin/tool")
	cur := makeTar(map[string]string{"etc/motd": "hello, world", "usr/bin/tool": string(bytes.Repeat([]byte("code "), 10000))}, "etc/motd", "usr/bin/tool")

	// Sender: index the base once (cache it by digest), encode the target.
	idx, err := tardelta.BuildIndex(bytes.NewReader(old))
	if err != nil {
		log.Fatal(err)
	}
	var delta bytes.Buffer
	st, err := tardelta.Encode(context.Background(), bytes.NewReader(cur),
		[]tardelta.Base{{Index: idx, Data: bytes.NewReader(old)}}, &delta, tardelta.Options{})
	if err != nil {
		log.Fatal(err)
	}

	// Receiver: rebuild the target from the delta and the same base.
	var out bytes.Buffer
	if _, err := tardelta.Apply(context.Background(), &delta, []tardelta.SizedReaderAt{bytes.NewReader(old)}, &out); err != nil {
		log.Fatal(err)
	}
	fmt.Println(bytes.Equal(out.Bytes(), cur), st.CopyBytes >= 50000, st.EncodedBytes < 200)
	// Output: true true true
}
