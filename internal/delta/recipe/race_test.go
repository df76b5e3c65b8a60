//go:build race

package recipe

// The race detector slows the encoders about tenfold; the tests then use smaller data and a
// smaller detection prefix (still larger than a default pgzip block, and smaller than the
// round-trip layer, so confirmation still has work of its own).
func init() {
	raceEnabled = true
	testTarSize = 1536 << 10
	trialPlain = 1088 << 10
	trialCompressed = 2 << 20
}
