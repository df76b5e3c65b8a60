//go:build !linux

package benchkit

import "os/exec"

func setChildAttrs(*exec.Cmd) {}
