//go:build !unix

package parquetread

import "time"

// cpuTime is not measured here.
func cpuTime() time.Duration { return 0 }
