package cli

import (
	"strings"
	"testing"
)

func TestCheckMemoryEnv(t *testing.T) {
	for _, v := range []string{"", "off", "0.9", "1", "0.25"} {
		environ := []string{"AUTOMEMLIMIT=" + v}
		if v == "" {
			environ = nil
		}
		if err := checkMemoryEnv(environ); err != nil {
			t.Errorf("AUTOMEMLIMIT=%q: %v", v, err)
		}
	}
	for _, v := range []string{"90%", "0", "-0.5", "1.5", "NaN", "Inf", "OFF", ""} {
		err := checkMemoryEnv([]string{"AUTOMEMLIMIT=" + v})
		if err == nil {
			t.Errorf("AUTOMEMLIMIT=%q accepted", v)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "AUTOMEMLIMIT") || !strings.Contains(msg, "(0, 1]") {
			t.Errorf("AUTOMEMLIMIT=%q: %q names neither the variable nor what is expected", v, msg)
		}
	}
}
