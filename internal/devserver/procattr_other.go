//go:build !linux

package devserver

import "syscall"

// sysProcAttr: elsewhere the server outlives a parent that is killed.
func sysProcAttr() *syscall.SysProcAttr { return nil }
