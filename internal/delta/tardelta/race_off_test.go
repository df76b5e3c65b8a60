//go:build !race

package tardelta

const raceEnabled = false
