package duration

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  string
	}{
		{in: "PT30S", want: 30 * time.Second},
		{in: "PT1H", want: time.Hour},
		{in: "PT1H30M", want: 90 * time.Minute},
		{in: "P2D", want: 48 * time.Hour},
		{in: "P1W", want: 7 * 24 * time.Hour},
		{in: "P1DT2H3M4.5S", want: 26*time.Hour + 3*time.Minute + 4500*time.Millisecond},
		{in: "pt0,5s", want: 500 * time.Millisecond},
		{in: "90s", want: 90 * time.Second},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "", err: "empty duration"},
		{in: "P", err: "no value after P"},
		{in: "PT", err: "no value after P"},
		{in: "P1DT", err: "no value after T"},
		{in: "P1M", err: "years and months"},
		{in: "P1Y", err: "years and months"},
		{in: "PT1D", err: "unknown unit D"},
		{in: "P1H", err: "unknown unit H"},
		{in: "PT1H1H", err: "appears twice"},
		{in: "P1", err: "followed by a unit"},
		{in: "PTH", err: "followed by a unit"},
		{in: "P1..2D", err: "bad number"},
		{in: "P99999999999999D", err: "too large"},
		{in: "-5s", err: "negative"},
		{in: "soon", err: "not a duration"},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("Parse(%q) error = %v, want it to contain %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got.Std() != tt.want {
			t.Errorf("Parse(%q) = %v, %v; want %v", tt.in, got.Std(), err, tt.want)
		}
	}
}

func TestStringRoundTrip(t *testing.T) {
	for _, d := range []time.Duration{0, time.Second, 90 * time.Minute, 49 * time.Hour, 1500 * time.Millisecond, 3 * 24 * time.Hour} {
		s := Duration(d).String()
		back, err := Parse(s)
		if err != nil || back.Std() != d {
			t.Errorf("%v printed as %q parsed back as %v, %v", d, s, back.Std(), err)
		}
	}
	if got := Duration(26 * time.Hour).String(); got != "P1DT2H" {
		t.Errorf("String() = %q, want P1DT2H", got)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"PT30S", "P2D", "P1DT2H3M4.5S", "90s", "P", "PT1H1H", "P1M"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := Parse(s)
		if err != nil {
			return
		}
		if d < 0 {
			t.Fatalf("Parse(%q) = %v: negative", s, d.Std())
		}
		// Whatever parses must print as ISO 8601 that parses back to nearly the same value
		// (float seconds may lose a nanosecond or so).
		back, err := Parse(d.String())
		if err != nil {
			t.Fatalf("Parse(%q).String() = %q does not parse: %v", s, d.String(), err)
		}
		if diff := back - d; diff > 1000 || diff < -1000 {
			t.Fatalf("round trip of %q: %v became %v", s, d.Std(), back.Std())
		}
	})
}
