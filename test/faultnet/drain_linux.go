package faultnet

import (
	"net"
	"syscall"
	"unsafe"
)

// unsent returns how many bytes written to c its peer has not yet acknowledged (SIOCOUTQ,
// which Linux numbers as TIOCOUTQ).
func unsent(c *net.TCPConn) (int, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var n int32
	var errno syscall.Errno
	err = rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&n)))
	})
	if err != nil || errno != 0 {
		return 0, false
	}
	return int(n), true
}
