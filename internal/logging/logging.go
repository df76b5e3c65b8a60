// Package logging builds the node's zap logger and routes distribution's logrus output into it.
package logging

import (
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/sirupsen/logrus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a logger writing to w at level ("debug", "info", "warn", "error") in format
// ("json", "console", or "auto": console when w is a terminal, json otherwise).
func New(w io.Writer, level, format string) (*zap.Logger, error) {
	log, _, err := NewAdjustable(w, level, format)
	return log, err
}

// NewAdjustable is New, and returns the level, which SetLevel changes while the node runs (a
// connected registry takes its log level from its parent).
func NewAdjustable(w io.Writer, level, format string) (*zap.Logger, zap.AtomicLevel, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, zap.AtomicLevel{}, fmt.Errorf("log level %q: %w", level, err)
	}
	atomicLevel := zap.NewAtomicLevelAt(lvl)
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			format = "console"
		}
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.TimeKey = "ts"
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	// Milliseconds with microsecond precision: most registry requests take less than one.
	encCfg.EncodeDuration = func(d time.Duration, enc zapcore.PrimitiveArrayEncoder) {
		enc.AppendFloat64(float64(d.Microseconds()) / 1000)
	}
	var enc zapcore.Encoder
	switch format {
	case "json":
		enc = zapcore.NewJSONEncoder(encCfg)
	case "console":
		encCfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	default:
		return nil, zap.AtomicLevel{}, fmt.Errorf("log format %q: expected json, console or auto", format)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), atomicLevel)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(w)))), atomicLevel, nil
}

// SetLevel changes the level of a logger from NewAdjustable, and of distribution's logrus
// output routed into it.
func SetLevel(atomicLevel zap.AtomicLevel, level zapcore.Level) {
	atomicLevel.SetLevel(level)
	std := logrus.StandardLogger()
	if level <= zapcore.DebugLevel {
		std.SetLevel(logrus.DebugLevel)
	} else {
		std.SetLevel(logrus.WarnLevel)
	}
}

// RouteLogrus sends everything distribution logs through logrus's standard logger to log, named
// "distribution". distribution logs only through that global logger (its context logger is
// internal), so this is the one place Outpost touches global state. Its info-level chatter
// ("response completed" per request) repeats Outpost's own request log, so below debug only its
// warnings and errors pass.
func RouteLogrus(log *zap.Logger) {
	std := logrus.StandardLogger()
	std.SetOutput(io.Discard)
	std.SetLevel(logrus.WarnLevel)
	if log.Core().Enabled(zapcore.DebugLevel) {
		std.SetLevel(logrus.DebugLevel)
	}
	hooks := make(logrus.LevelHooks)
	hooks.Add(&zapHook{log: log.Named("distribution")})
	std.ReplaceHooks(hooks)
}

type zapHook struct{ log *zap.Logger }

func (h *zapHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h *zapHook) Fire(e *logrus.Entry) error {
	lvl := zapcore.DebugLevel
	switch e.Level {
	case logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel:
		lvl = zapcore.ErrorLevel
	case logrus.WarnLevel:
		lvl = zapcore.WarnLevel
	case logrus.InfoLevel:
		lvl = zapcore.InfoLevel
	}
	// distribution logs every 4xx at error level ("response completed with error"); a client's
	// 404 on a HEAD is routine and the request log has it already.
	if status, ok := e.Data["http.response.status"].(int); ok && status < 500 && lvl > zapcore.InfoLevel {
		lvl = zapcore.DebugLevel
	}
	// Content addressed by sha512 is read through a link to its sha256; distribution warns at
	// every such read.
	if strings.HasPrefix(e.Message, "looking up blob with canonical target") {
		lvl = zapcore.DebugLevel
	}
	ce := h.log.Check(lvl, e.Message)
	if ce == nil {
		return nil
	}
	fields := make([]zap.Field, 0, len(e.Data))
	for k, v := range e.Data {
		if err, ok := v.(error); ok {
			fields = append(fields, zap.NamedError(k, err))
			continue
		}
		fields = append(fields, zap.Any(k, v))
	}
	ce.Write(fields...)
	return nil
}

// Incident names one failure with 12 random lowercase letters and digits. A node answers a
// failure of its own with the number only, and logs the error under it: the error may name the
// node's files, and the caller's operator can still quote the number to find it.
func Incident() string {
	return strings.ToLower(rand.Text()[:12])
}

// IncidentMessage is what a client is told of a failure: what went wrong, in words that name
// nothing of the node, and the incident number to quote.
func IncidentMessage(what, incident string) string {
	return what + ": incident " + incident + " in this node's log"
}
