package sync

import (
	"sort"
	stdsync "sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// progress is the engine's live state for `outpost sync status`.
type progress struct {
	mu          stdsync.Mutex
	link        string
	syncing     bool
	lastPass    *acrapi.PassSummary
	lastSuccess *time.Time
	repos       map[string]*acrapi.RepoSyncStatus
	blobs       map[digest.Digest]*blobProgress
	queue       int
}

func newProgress() *progress {
	return &progress{link: "unknown", repos: map[string]*acrapi.RepoSyncStatus{}, blobs: map[digest.Digest]*blobProgress{}}
}

// blobProgress tracks one blob's transfer and its recent rate.
type blobProgress struct {
	repo    string
	digest  digest.Digest
	total   int64
	done    atomic.Int64
	mu      stdsync.Mutex
	rate    float64 // bytes per second, smoothed
	lastAt  time.Time
	lastVal int64
}

func (b *blobProgress) set(done int64) {
	b.done.Store(done)
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if dt := now.Sub(b.lastAt).Seconds(); dt > 0.2 {
		inst := float64(done-b.lastVal) / dt
		if b.rate == 0 {
			b.rate = inst
		} else {
			b.rate = 0.7*b.rate + 0.3*inst
		}
		b.lastAt, b.lastVal = now, done
	}
}

func (p *progress) startBlob(repo string, d digest.Digest, total, done int64) *blobProgress {
	b := &blobProgress{repo: repo, digest: d, total: total, lastAt: time.Now(), lastVal: done}
	b.done.Store(done)
	p.mu.Lock()
	p.blobs[d] = b
	p.mu.Unlock()
	return b
}

func (p *progress) endBlob(d digest.Digest) {
	p.mu.Lock()
	delete(p.blobs, d)
	p.mu.Unlock()
}

func (p *progress) setLink(up bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if up {
		p.link = "up"
	} else {
		p.link = "down"
	}
}

func (p *progress) repo(name string) *acrapi.RepoSyncStatus {
	r, ok := p.repos[name]
	if !ok {
		r = &acrapi.RepoSyncStatus{Name: name, State: "pending"}
		p.repos[name] = r
	}
	return r
}

func (p *progress) repoStarted(name string, pending int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.repo(name)
	r.State, r.ImagesPending = "syncing", pending
}

func (p *progress) imageDone(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r := p.repo(name); r.ImagesPending > 0 {
		r.ImagesPending--
	}
}

func (p *progress) repoFinished(name string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.repo(name)
	if err != nil {
		r.State, r.LastError = "error", err.Error()
		return
	}
	now := time.Now().UTC()
	r.State, r.LastError, r.LastSuccess, r.ImagesPending = "synced", "", &now, 0
}

func (p *progress) snapshot() acrapi.SyncStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := acrapi.SyncStatus{Link: p.link, State: "idle", LastSuccess: p.lastSuccess, QueueLength: p.queue,
		Repositories: []acrapi.RepoSyncStatus{}, InFlight: []acrapi.BlobProgress{}}
	if p.syncing {
		s.State = "syncing"
	}
	if p.lastPass != nil {
		lp := *p.lastPass
		s.LastPass = &lp
	}
	for _, r := range p.repos {
		s.Repositories = append(s.Repositories, *r)
	}
	sort.Slice(s.Repositories, func(i, j int) bool { return s.Repositories[i].Name < s.Repositories[j].Name })
	for _, b := range p.blobs {
		b.mu.Lock()
		rate := b.rate
		b.mu.Unlock()
		done := b.done.Load()
		eta := -1.0
		if rate > 0 {
			eta = float64(b.total-done) / rate
		}
		s.InFlight = append(s.InFlight, acrapi.BlobProgress{Repository: b.repo, Digest: b.digest.String(),
			Done: done, Total: b.total, BytesPerSecond: rate, ETASeconds: eta})
	}
	sort.Slice(s.InFlight, func(i, j int) bool { return s.InFlight[i].Digest < s.InFlight[j].Digest })
	return s
}
