//go:build race

package delta_test

const raceEnabled = true
