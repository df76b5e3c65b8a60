package cronexpr

import (
	"strings"
	"testing"
	"time"
)

func TestParseAndPeriod(t *testing.T) {
	at := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC) // a Friday
	for expr, want := range map[string]time.Duration{
		"* * * * *":    time.Minute,
		"*/15 * * * *": 15 * time.Minute,
		"0 1 * * *":    24 * time.Hour,
		"@hourly":      time.Hour,
		"0 9 * * 1-5":  72 * time.Hour, // Friday to Monday
	} {
		s, err := Parse(expr)
		if err != nil {
			t.Fatalf("Parse(%q): %v", expr, err)
		}
		if got := Period(s, at); got != want {
			t.Errorf("Period(%q) = %v, want %v", expr, got, want)
		}
	}
	if _, err := Parse("0 * * * * *"); err == nil || !strings.Contains(err.Error(), "5-field") {
		t.Fatalf("six fields accepted: %v", err)
	}
}
