package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.uber.org/zap"
)

func TestJSONAndLevel(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, "warn", "auto") // a buffer is not a terminal: json
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown", zap.String("k", "v"))
	_ = log.Sync()
	out := strings.TrimSpace(buf.String())
	if strings.Contains(out, "hidden") || strings.Count(out, "\n") != 0 {
		t.Fatalf("unexpected output %q", out)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil || m["msg"] != "shown" || m["k"] != "v" {
		t.Fatalf("not the json line expected: %q (%v)", out, err)
	}
}

func TestBadInput(t *testing.T) {
	if _, err := New(&bytes.Buffer{}, "loud", "json"); err == nil {
		t.Fatal("bad level accepted")
	}
	if _, err := New(&bytes.Buffer{}, "info", "xml"); err == nil {
		t.Fatal("bad format accepted")
	}
}

func TestRouteLogrus(t *testing.T) {
	var buf bytes.Buffer
	log, _ := New(&buf, "info", "json")
	RouteLogrus(log)
	logrus.WithField("vars.name", "alpine").Info("response completed")
	logrus.WithError(errors.New("disk gone")).Error("storage failed")
	out := buf.String()
	if strings.Contains(out, "response completed") {
		t.Fatalf("distribution info chatter leaked at info level: %s", out)
	}
	if !strings.Contains(out, `"logger":"distribution"`) || !strings.Contains(out, `"error":"disk gone"`) {
		t.Fatalf("distribution error not routed with its fields: %s", out)
	}

	buf.Reset()
	log, _ = New(&buf, "debug", "json")
	RouteLogrus(log)
	logrus.WithField("vars.name", "alpine").Info("response completed")
	if !strings.Contains(buf.String(), `"vars.name":"alpine"`) {
		t.Fatalf("debug level should pass distribution's info lines: %s", buf.String())
	}
}

func TestSetLevel(t *testing.T) {
	var buf bytes.Buffer
	log, lvl, err := NewAdjustable(&buf, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hidden")
	SetLevel(lvl, zap.DebugLevel)
	log.Debug("shown")
	SetLevel(lvl, zap.ErrorLevel)
	log.Warn("hidden too")
	if out := buf.String(); strings.Contains(out, "hidden") || !strings.Contains(out, "shown") {
		t.Fatalf("levels not applied: %s", out)
	}
}

func TestDurationsInFractionalMilliseconds(t *testing.T) {
	var buf bytes.Buffer
	log, _ := New(&buf, "info", "json")
	log.Info("request", zap.Duration("duration", 1234567*time.Nanosecond))
	if !strings.Contains(buf.String(), `"duration":1.234`) {
		t.Fatalf("duration not in fractional milliseconds: %s", buf.String())
	}
}
