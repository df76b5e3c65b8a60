//go:build !unix

package app

// diskFree is not known off Unix.
func diskFree(string) (int64, bool) { return 0, false }
