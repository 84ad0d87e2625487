//go:build !unix

package reactionbench

import "time"

// processCPU is not measured here.
func processCPU() time.Duration { return 0 }
