package devserver

import "syscall"

// sysProcAttr makes the kernel kill the server when its parent dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
