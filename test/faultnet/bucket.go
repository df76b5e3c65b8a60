package faultnet

import (
	"sync"
	"time"
)

// burstWindow is how much idle link time a bucket may bank. It is short so that a transfer
// starting on an idle link is still paced almost from its first byte, yet long enough that
// timer granularity does not eat into the configured rate.
const burstWindow = 50 * time.Millisecond

// maxChunk bounds one read from a socket, and so one unit of pacing, latency and corruption.
const maxChunk = 32 << 10

// bucket paces the bytes of every connection of one direction to one shared rate, as one
// physical link would. It is a token bucket kept as a virtual clock: each chunk reserves the
// span of link time it needs, so concurrent connections queue behind each other instead of
// each getting the full rate.
type bucket struct {
	mu   sync.Mutex
	rate float64 // bytes per second; 0 means unlimited
	// next is when the link has finished carrying everything reserved so far.
	next time.Time
	// changed is closed when the rate changes, so that waiters reserve again at the new rate
	// instead of sleeping out a reservation made at the old one.
	changed chan struct{}
}

func newBucket() *bucket { return &bucket{changed: make(chan struct{})} }

func (b *bucket) setRate(bytesPerSec int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rate = float64(max(bytesPerSec, 0))
	b.next = time.Time{}
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *bucket) getRate() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return int64(b.rate)
}

// chunkSize is how much to read at once: about 20 ms of link time, so a slow link delivers a
// steady trickle rather than a burst every few seconds.
func (b *bucket) chunkSize() int {
	r := b.getRate()
	if r <= 0 {
		return maxChunk
	}
	return int(min(max(r/50, 512), maxChunk))
}

// wait blocks until the link has carried n more bytes. It reports false if done was closed
// first.
func (b *bucket) wait(n int, done <-chan struct{}) bool {
	for {
		b.mu.Lock()
		if b.rate <= 0 {
			b.mu.Unlock()
			return true
		}
		now := time.Now()
		start := b.next
		if floor := now.Add(-burstWindow); start.Before(floor) {
			start = floor
		}
		end := start.Add(time.Duration(float64(n) / b.rate * float64(time.Second)))
		b.next = end
		changed := b.changed
		b.mu.Unlock()

		d := time.Until(end)
		if d <= 0 {
			return true
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
			return true
		case <-changed:
			t.Stop()
		case <-done:
			t.Stop()
			return false
		}
	}
}
