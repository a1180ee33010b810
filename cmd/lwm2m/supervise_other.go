//go:build !linux

package main

import "os/exec"

// setDeathSignal has no equivalent of Linux's PR_SET_PDEATHSIG here.
func setDeathSignal(*exec.Cmd) {}
