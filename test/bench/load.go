package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/outpost-registry/outpost/test/bench/benchkit"
)

const mib = 1 << 20

// pull fetches the image as a client does: the manifest by tag, then every blob it names. Blob
// bytes are counted and dropped; only lengths are checked. It returns the bytes received.
func (s *server) pull(ctx context.Context, buf []byte) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Base+"/v2/"+benchkit.Repo+"/manifests/"+benchkit.Tag, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", v1.MediaTypeImageManifest)
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET manifest: %w", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	resp.Body.Close()
	if err != nil {
		return 0, fmt.Errorf("GET manifest: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET manifest: %w %s: %s", benchkit.ErrStatus, resp.Status, body)
	}
	var m v1.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return 0, fmt.Errorf("GET manifest: %w", err)
	}
	total := int64(len(body))
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		n, err := s.getBlob(ctx, d.Digest, d.Size, buf)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (s *server) getBlob(ctx context.Context, d digest.Digest, size int64, buf []byte) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Base+"/v2/"+benchkit.Repo+"/blobs/"+d.String(), nil)
	if err != nil {
		return 0, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET blob %s: %w", d, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET blob %s: %w %s: %s", d, benchkit.ErrStatus, resp.Status, benchkit.ReadSome(resp.Body))
	}
	var n int64
	for {
		k, err := resp.Body.Read(buf)
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, fmt.Errorf("GET blob %s after %d bytes: %w", d, n, err)
		}
	}
	if n != size {
		return n, fmt.Errorf("GET blob %s: got %d bytes, expected %d", d, n, size)
	}
	return n, nil
}

// result is one measurement: the rate (MiB/s or requests/s) and the work done (GiB or requests),
// the divisor of the server's CPU time.
type result struct {
	rate, work float64
}

// pullRate runs pullers concurrent clients, each pulling the whole image again and again until
// minDur has passed (at least once each), and returns the aggregate MiB/s and the GiB pulled.
func pullRate(ctx context.Context, s *server, pullers int, minDur time.Duration) (result, error) {
	var (
		total    atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	for range pullers {
		wg.Go(func() {
			buf := make([]byte, 256<<10)
			for {
				n, err := s.pull(ctx, buf)
				total.Add(n)
				if err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				if time.Since(start) >= minDur {
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return result{}, firstErr
	}
	return result{rate: float64(total.Load()) / mib / elapsed.Seconds(), work: float64(total.Load()) / (1 << 30)}, nil
}

// requestRate runs conns workers over keep-alive connections, each sending the request that
// newReq makes, one after another, for dur; check validates each response. It returns requests
// per second and the number of requests.
func requestRate(ctx context.Context, s *server, conns int, dur time.Duration,
	newReq func(context.Context) (*http.Request, error), check func(*http.Response, int64) error) (result, error) {
	var (
		count    atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	deadline := start.Add(dur)
	for range conns {
		wg.Go(func() {
			buf := make([]byte, 32<<10)
			for time.Now().Before(deadline) {
				err := func() error {
					req, err := newReq(ctx)
					if err != nil {
						return err
					}
					resp, err := s.client.Do(req)
					if err != nil {
						return fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
					}
					defer resp.Body.Close()
					var n int64
					for {
						k, err := resp.Body.Read(buf)
						n += int64(k)
						if err == io.EOF {
							break
						}
						if err != nil {
							return fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
						}
					}
					if err := check(resp, n); err != nil {
						return fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
					}
					return nil
				}()
				if err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				count.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return result{}, firstErr
	}
	return result{rate: float64(count.Load()) / elapsed.Seconds(), work: float64(count.Load())}, nil
}

// manifestGetRate measures GET of the manifest by tag.
func manifestGetRate(ctx context.Context, s *server, img *benchkit.Image, conns int, dur time.Duration) (result, error) {
	u := s.Base + "/v2/" + benchkit.Repo + "/manifests/" + benchkit.Tag
	return requestRate(ctx, s, conns, dur,
		func(ctx context.Context) (*http.Request, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			if err == nil {
				req.Header.Set("Accept", v1.MediaTypeImageManifest)
			}
			return req, err
		},
		func(resp *http.Response, n int64) error {
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%w %s", benchkit.ErrStatus, resp.Status)
			}
			if n != img.ManifestDesc.Size {
				return fmt.Errorf("got %d bytes, expected %d", n, img.ManifestDesc.Size)
			}
			return nil
		})
}

// blobHeadRate measures HEAD of the first layer.
func blobHeadRate(ctx context.Context, s *server, img *benchkit.Image, conns int, dur time.Duration) (result, error) {
	layer := img.Blobs[1]
	u := s.Base + "/v2/" + benchkit.Repo + "/blobs/" + layer.Digest.String()
	want := strconv.FormatInt(layer.Size, 10)
	return requestRate(ctx, s, conns, dur,
		func(ctx context.Context) (*http.Request, error) {
			return http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
		},
		func(resp *http.Response, _ int64) error {
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%w %s", benchkit.ErrStatus, resp.Status)
			}
			if got := resp.Header.Get("Content-Length"); got != want {
				return fmt.Errorf("content length %q, expected %s", got, want)
			}
			return nil
		})
}
