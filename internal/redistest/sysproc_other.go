//go:build !linux

package redistest

import "os/exec"

// configure has nothing to set where the kernel cannot tie the child's life to
// the test process; cleanups stop the server.
func configure(*exec.Cmd) {}
