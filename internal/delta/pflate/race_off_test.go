//go:build !race

package pflate

const raceEnabled = false

const sizeDiv = 1
