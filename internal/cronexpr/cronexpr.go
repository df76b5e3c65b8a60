// Package cronexpr parses the 5-field cron expressions (UTC) of sync schedules, and measures
// their period.
package cronexpr

import (
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
)

// Parser reads minute hour day-of-month month day-of-week, and descriptors such as @hourly.
var Parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Parse reads expr, with an error that says what form is expected.
func Parse(expr string) (cron.Schedule, error) {
	s, err := Parser.Parse(expr)
	if err != nil {
		return nil, fmt.Errorf("%q is not a 5-field cron expression (minute hour day-of-month month day-of-week, UTC): %v", expr, err)
	}
	return s, nil
}

// Period is the longest gap between consecutive firings of s after t, looked at over the next
// few firings (cron gaps vary: "0 9 * * 1-5" has a 3-day gap over weekends).
func Period(s cron.Schedule, t time.Time) time.Duration {
	var longest time.Duration
	prev := s.Next(t.UTC())
	for range 8 {
		next := s.Next(prev)
		if next.IsZero() {
			break
		}
		longest = max(longest, next.Sub(prev))
		prev = next
	}
	return longest
}
