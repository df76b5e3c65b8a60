package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestCrashRecovery kills a node with SIGKILL in the middle of a large chunked upload and restarts
// it on the same data directory: everything pushed before is intact, and the interrupted upload
// can both be started over and be resumed.
func TestCrashRecovery(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})

	images := []struct {
		ref string
		img v1.Image
	}{
		{"crash/app:v1", randomImage(t, 2, 256<<10)},
		{"crash/app:v2", randomImage(t, 1, 64<<10)},
		{"crash/other:latest", randomImage(t, 3, 32<<10)},
	}
	for _, im := range images {
		n.pushImage(t, im.ref, im.img)
	}
	loose := randomBytes(31, 200<<10)
	looseDigest := n.uploadBlob(t, "crash/loose", loose)

	// A small upload with two acknowledged chunks, to be continued after the restart with the
	// Location it had before the crash.
	small := randomBytes(32, 3*100<<10)
	smallLoc := n.startUpload(t, "crash/small")
	smallLoc = n.patchChunk(t, smallLoc, small[:100<<10], 0)
	smallLoc = n.patchChunk(t, smallLoc, small[100<<10:200<<10], 100<<10)

	// The large upload: 64 MiB in 1 MiB chunks, killed half-way through the body of chunk 25.
	const size, chunk, acked = 64 << 20, 1 << 20, 24
	big := randomBytes(33, size)
	bigDigest := digestOf(big)
	bigLoc := n.startUpload(t, "crash/big")
	for i := range acked {
		bigLoc = n.patchChunk(t, bigLoc, big[i*chunk:(i+1)*chunk], int64(i*chunk))
	}
	killDuringPatch(t, n, bigLoc, big[acked*chunk:(acked+1)*chunk], acked*chunk)
	if code, _ := n.waitExit(time.Second); code != -1 {
		t.Fatalf("after SIGKILL the exit code is %d, want -1 (killed by a signal)", code)
	}

	n.restart()

	t.Run("content pushed before the crash is intact", func(t *testing.T) {
		for _, im := range images {
			n.expectSameImage(t, n.ref(t, im.ref), im.img)
			repo := n.ref(t, im.ref).Context().RepositoryStr()
			n.expectSameImage(t, n.digestRef(t, repo, mustDigest(t, im.img)), im.img)
		}
		if got := n.getBlob(t, "crash/loose", looseDigest); !bytes.Equal(got, loose) {
			t.Errorf("the loose blob's bytes differ after the restart")
		}
	})

	t.Run("upload continues with its Location from before the crash", func(t *testing.T) {
		// The upload state in the Location is signed with the node's secret, which survives
		// restarts.
		loc := n.patchChunk(t, smallLoc, small[200<<10:], 200<<10)
		n.finishUpload(t, loc, digestOf(small), nil)
		if got := n.getBlob(t, "crash/small", digestOf(small)); !bytes.Equal(got, small) {
			t.Errorf("the resumed small blob's bytes differ")
		}
	})

	t.Run("interrupted upload resumes from its reported Range", func(t *testing.T) {
		r := n.do(t, http.MethodGet, bigLoc, nil)
		expectStatus(t, "GET status of the interrupted upload", r, http.StatusNoContent)
		expectRelativeLocation(t, "GET status", r)
		offset := rangeEnd(t, r) + 1
		t.Logf("the interrupted upload holds %d bytes (%d acknowledged before the kill)", offset, acked*chunk)
		if offset < acked*chunk || offset > acked*chunk+chunk/2 {
			t.Fatalf("the interrupted upload reports %d bytes, want between %d (acknowledged) and %d (sent)",
				offset, acked*chunk, acked*chunk+chunk/2)
		}
		loc := r.header.Get("Location")
		for off := offset; off < size; off += chunk {
			loc = n.patchChunk(t, loc, big[off:min(off+chunk, size)], off)
		}
		n.finishUpload(t, loc, bigDigest, nil)
		if got := n.getBlob(t, "crash/big", bigDigest); !bytes.Equal(got, big) {
			t.Errorf("the resumed blob's bytes differ")
		}
	})

	t.Run("interrupted upload starts over", func(t *testing.T) {
		loc := n.startUpload(t, "crash/big")
		for off := int64(0); off < size; off += chunk {
			loc = n.patchChunk(t, loc, big[off:off+chunk], off)
		}
		n.finishUpload(t, loc, bigDigest, nil)
		if got := n.getBlob(t, "crash/big", bigDigest); !bytes.Equal(got, big) {
			t.Errorf("the re-uploaded blob's bytes differ")
		}
	})
}

// killDuringPatch starts a PATCH of chunk (at offset start) to loc, sends half of its body, and
// SIGKILLs the node while the request is still being received.
func killDuringPatch(t *testing.T, n *node, loc string, chunk []byte, start int64) {
	t.Helper()
	ctx := testContext(t, time.Minute)
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, n.base()+loc, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(chunk))
	req.Header.Set("Content-Type", mtOctets)
	req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", start, start+int64(len(chunk))-1))
	done := make(chan error, 1)
	go func() {
		resp, err := n.client.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("unexpected response %s", resp.Status)
		} else {
			err = nil
		}
		done <- err
	}()
	if _, err := pw.Write(chunk[:len(chunk)/2]); err != nil {
		t.Fatalf("sending the first half of the chunk: %v", err)
	}
	time.Sleep(300 * time.Millisecond) // let the node write what it received
	n.kill()
	pw.CloseWithError(errors.New("the node was killed"))
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("PATCH interrupted by SIGKILL: %v", err)
		}
	case <-ctx.Done():
		t.Fatalf("the interrupted PATCH did not end")
	}
}
