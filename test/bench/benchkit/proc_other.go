//go:build !linux

package benchkit

import (
	"os/exec"
	"time"
)

func setChildAttrs(*exec.Cmd) {}

// ProcessCPU is not available here: CPU figures are left out.
func ProcessCPU(int) (time.Duration, bool, error) { return 0, false, nil }
