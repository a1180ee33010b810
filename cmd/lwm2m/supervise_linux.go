package main

import (
	"os/exec"
	"syscall"
)

// setDeathSignal kills the program when its supervisor dies, so that a
// killed device leaves no orphan running the old or the new program.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
