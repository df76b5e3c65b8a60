package faultnet

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync/atomic"
)

// Corruption says which downstream bytes the proxy flips. A flipped byte is XORed with 0xFF,
// so it always differs from the original and a digest check must catch it.
type Corruption struct {
	// Offsets are positions in each connection's downstream stream, counted from the first
	// byte the target sent on that connection (so HTTP response headers count too).
	Offsets []int64
	// Probability is the chance that any one downstream byte is flipped.
	Probability float64
	// Seed drives Probability. Connection i draws from (Seed, i) and the draws depend only on
	// stream positions, so the same traffic is corrupted the same way however it is chunked.
	Seed uint64
	// Limit caps the flips made under this setting across all connections; 0 means no cap.
	// Limit 1 corrupts one transfer and lets its retry through.
	Limit int64
}

type corruptConfig struct {
	Corruption
	offsets []int64 // sorted copy of Offsets
	flips   atomic.Int64
}

// corruptState is a connection's position in the random flip sequence of one setting.
type corruptState struct {
	cfg  *corruptConfig
	rng  *rand.Rand // nil when Probability is 0
	next int64      // stream position of the next random flip
}

// SetCorruption replaces the corruption setting; the zero Corruption turns it off. Open
// connections follow the new setting from their current position on.
func (p *Proxy) SetCorruption(c Corruption) {
	if len(c.Offsets) == 0 && c.Probability <= 0 {
		p.corruption.Store(nil)
		return
	}
	cfg := &corruptConfig{Corruption: c, offsets: slices.Clone(c.Offsets)}
	slices.Sort(cfg.offsets)
	cfg.offsets = slices.Compact(cfg.offsets)
	p.corruption.Store(cfg)
}

// corruptChunk flips the bytes of data, which starts at stream position pos, that the
// setting selects.
func (c *conn) corruptChunk(data []byte, pos int64) {
	cfg := c.p.corruption.Load()
	if cfg == nil {
		return
	}
	st := &c.corrupt
	if st.cfg != cfg {
		st.cfg, st.rng = cfg, nil
		if cfg.Probability > 0 {
			st.rng = rand.New(rand.NewPCG(cfg.Seed, uint64(c.id)))
			st.next = pos + st.gap()
		}
	}
	end := pos + int64(len(data))
	i, _ := slices.BinarySearch(cfg.offsets, pos)
	for ; i < len(cfg.offsets) && cfg.offsets[i] < end; i++ {
		c.flip(cfg, data, cfg.offsets[i]-pos)
	}
	for st.rng != nil && st.next < end {
		// A byte chosen both ways is flipped once: flipping it twice would restore it.
		if _, hit := slices.BinarySearch(cfg.offsets, st.next); !hit {
			c.flip(cfg, data, st.next-pos)
		}
		st.next += 1 + st.gap()
	}
}

// gap draws how many bytes to leave alone before the next random flip: geometric, which is
// what flipping each byte independently with the probability gives, at one draw per flip.
func (st *corruptState) gap() int64 {
	p := st.cfg.Probability
	if p >= 1 {
		return 0
	}
	g := math.Log1p(-st.rng.Float64()) / math.Log1p(-p)
	if g > math.MaxInt64/4 {
		return math.MaxInt64 / 4
	}
	return int64(g)
}

func (c *conn) flip(cfg *corruptConfig, data []byte, i int64) {
	if cfg.Limit > 0 {
		for {
			n := cfg.flips.Load()
			if n >= cfg.Limit {
				return
			}
			if cfg.flips.CompareAndSwap(n, n+1) {
				break
			}
		}
	}
	data[i] ^= 0xFF
	c.p.corrupted.Add(1)
}
