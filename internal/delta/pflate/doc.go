// Package pflate compresses with Go's compress/flate in parallel segments whose output is, bit for bit, the serial stream, at split points found on that stream.
package pflate
