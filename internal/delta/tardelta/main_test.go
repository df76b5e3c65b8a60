package tardelta

import (
	"testing"

	"go.uber.org/goleak"
)

// The encoder runs a goroutine pipeline; none may outlive Encode.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
