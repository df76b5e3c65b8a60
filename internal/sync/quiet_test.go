package sync_test

import (
	"io"

	"github.com/sirupsen/logrus"
)

// The registries in these tests log through distribution's global logrus logger; the node
// routes it into zap, tests silence it.
func init() { logrus.SetOutput(io.Discard) }
