//go:build linux

package redistest

import (
	"os/exec"
	"syscall"
)

// configure asks the kernel to kill redis-server when the test process dies.
// A test binary killed by -timeout or a crash runs no cleanups, and the
// orphaned server would otherwise keep its port and memory. The signal follows
// the OS thread that started the child, not the process
// (https://github.com/golang/go/issues/27505); Go only retires a thread whose
// goroutine exits while locked to it, which test code does not do.
func configure(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
