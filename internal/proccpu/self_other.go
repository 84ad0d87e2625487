//go:build !unix

package proccpu

import "time"

// Self is not measured here.
func Self() time.Duration { return 0 }
