// Package duration parses and prints durations in ISO 8601 form (PT1H, P2D), the form Outpost's
// contract uses, and also accepts Go's form (90s, 1h30m) for operators who type that.
package duration

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration that reads and writes ISO 8601 text.
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// maxSeconds bounds parsed values so that conversion to nanoseconds cannot overflow.
const maxSeconds = float64(1<<63-1) / float64(time.Second)

// Parse reads an ISO 8601 duration (days, weeks, hours, minutes and seconds; fractional seconds
// allowed) or a Go duration such as "90s". Years and months are refused: their length varies.
func Parse(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty duration: expected ISO 8601 such as PT30S, PT1H or P2D")
	}
	if s[0] != 'P' && s[0] != 'p' {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration: expected ISO 8601 such as PT30S, PT1H or P2D", s)
		}
		if d < 0 {
			return 0, fmt.Errorf("%q is negative: a duration must be zero or more", s)
		}
		return Duration(d), nil
	}
	return parseISO(s)
}

func parseISO(s string) (Duration, error) {
	bad := func(why string) (Duration, error) {
		return 0, fmt.Errorf("%q is not an ISO 8601 duration (%s): expected a form such as PT30S, PT1H30M or P2D", s, why)
	}
	rest := strings.ToUpper(s[1:])
	if rest == "" || rest == "T" {
		return bad("no value after P")
	}
	var total float64
	inTime := false
	seen := ""
	for rest != "" {
		if rest[0] == 'T' {
			if inTime {
				return bad("T appears twice")
			}
			inTime = true
			rest = rest[1:]
			if rest == "" {
				return bad("no value after T")
			}
			continue
		}
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.' || rest[i] == ',') {
			i++
		}
		if i == 0 || i == len(rest) {
			return bad("a number must be followed by a unit")
		}
		num, err := strconv.ParseFloat(strings.ReplaceAll(rest[:i], ",", "."), 64)
		if err != nil {
			return bad("bad number " + rest[:i])
		}
		unit := rest[i]
		rest = rest[i+1:]
		var secs float64
		switch {
		case !inTime && unit == 'W':
			secs = 7 * 24 * 3600
		case !inTime && unit == 'D':
			secs = 24 * 3600
		case !inTime && (unit == 'Y' || unit == 'M'):
			return bad("years and months vary in length; use days, e.g. P30D")
		case inTime && unit == 'H':
			secs = 3600
		case inTime && unit == 'M':
			secs = 60
		case inTime && unit == 'S':
			secs = 1
		default:
			return bad("unknown unit " + string(unit))
		}
		key := string(unit)
		if inTime {
			key = "T" + key
		}
		if strings.Contains(seen, key+",") {
			return bad("unit " + string(unit) + " appears twice")
		}
		seen += key + ","
		total += num * secs
		if total > maxSeconds {
			return bad("too large")
		}
	}
	return Duration(time.Duration(total * float64(time.Second))), nil
}

// String prints d in ISO 8601, for example PT30S, PT1H30M or P2DT3H.
func (d Duration) String() string {
	if d == 0 {
		return "PT0S"
	}
	t := time.Duration(d)
	var b strings.Builder
	b.WriteString("P")
	if days := t / (24 * time.Hour); days > 0 {
		fmt.Fprintf(&b, "%dD", days)
		t -= days * 24 * time.Hour
	}
	if t == 0 {
		return b.String()
	}
	b.WriteString("T")
	if h := t / time.Hour; h > 0 {
		fmt.Fprintf(&b, "%dH", h)
		t -= h * time.Hour
	}
	if m := t / time.Minute; m > 0 {
		fmt.Fprintf(&b, "%dM", m)
		t -= m * time.Minute
	}
	if t > 0 {
		b.WriteString(strconv.FormatFloat(t.Seconds(), 'f', -1, 64))
		b.WriteString("S")
	}
	return b.String()
}

// MarshalText writes d in ISO 8601.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads ISO 8601 or Go duration text.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}
