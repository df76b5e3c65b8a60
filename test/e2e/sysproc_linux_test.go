package e2e

import "syscall"

// sysProcAttr makes the kernel kill a node if the test process dies first (a panic on timeout),
// so that no outpost process outlives the test run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
