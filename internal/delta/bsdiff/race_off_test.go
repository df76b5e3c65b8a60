//go:build !race

package bsdiff

const raceEnabled = false
