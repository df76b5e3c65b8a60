package recipe

import (
	"testing"

	"go.uber.org/goleak"
)

// Writers and detection start goroutines (pgzip blocks, the asynchronous writer, parallel
// trials, zstd); none may outlive the call that owns it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
