package main

import (
	"os"
	"strings"
)

// loadAverage is the 1-minute load average, to tell how busy the machine was; "" if unknown.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}
