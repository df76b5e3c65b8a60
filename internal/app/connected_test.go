package app

import (
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/outpost-registry/outpost/internal/config"
)

func TestLogLevelFromParent(t *testing.T) {
	var got []zapcore.Level
	n := &Node{log: zap.NewNop(), src: config.Sources{}}
	n.applyLogLevel("Debug") // nothing to set it with yet: ignored
	n.OnLogLevel(func(l zapcore.Level) { got = append(got, l) })
	for _, l := range []string{"Debug", "Debug", "Warning", "None", "Loud"} {
		n.applyLogLevel(l)
	}
	want := []zapcore.Level{zapcore.DebugLevel, zapcore.WarnLevel, zapcore.FatalLevel}
	if len(got) != len(want) {
		t.Fatalf("levels set %v, want %v (once per change, unknown ignored)", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("levels set %v, want %v", got, want)
		}
	}
	// The operator's own log.level wins.
	n2 := &Node{log: zap.NewNop(), src: config.Sources{"log.level": "flag --log-level"}}
	n2.OnLogLevel(func(l zapcore.Level) { t.Fatalf("set %v despite --log-level", l) })
	n2.applyLogLevel("Error")
}
