//go:build race

package pflate

const raceEnabled = true

// Under the race detector compress/flate runs about ten times slower: the tests use inputs
// a quarter of their size, with split points closer together.
func init() { splitEvery = MinSegment }

const sizeDiv = 4
