//go:build !linux

package main

import (
	"errors"
	"os/exec"
)

func setGroupAttrs(*exec.Cmd) {}

var errNoProc = errors.New("no /proc here")

func peakRSS(int) (int64, error) { return 0, errNoProc }
func resetPeakRSS(int) error     { return errNoProc }

func unmountUnder(string) error { return nil }
