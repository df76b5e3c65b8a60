package benchkit

import (
	"os/exec"
	"syscall"
)

// setChildAttrs makes the kernel kill a server if the benchmark dies without stopping it.
func setChildAttrs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
