//go:build !linux

package main

import (
	"errors"
	"os/exec"
	"time"
)

func setGroupAttrs(*exec.Cmd) {}
func setChildAttrs(*exec.Cmd) {}

var errNoProc = errors.New("no /proc here")

func peakRSS(int) (int64, error)            { return 0, errNoProc }
func resetPeakRSS(int) error                { return errNoProc }
func processCPU(int) (time.Duration, error) { return 0, errNoProc }

func unmountUnder(string) error { return nil }
