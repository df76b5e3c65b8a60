package config

import (
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"

	"github.com/distribution/reference"
	"github.com/robfig/cron/v3"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// CronParser reads the 5-field cron expressions of sync.schedule and sync.gcSchedule.
var CronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// HasParent reports whether the node mirrors a parent (a generic registry, or an Outpost
// parent it is connected to).
func (c *Config) HasParent() bool { return c.Parent.URL != "" || c.ConnectionString != "" }

// Connected reports whether the node is a connected registry under an Outpost parent.
func (c *Config) Connected() bool { return c.ConnectionString != "" }

// IsRoot reports whether the node has no parent: it holds the control plane.
func (c *Config) IsRoot() bool { return !c.HasParent() }

// HasAdmin reports whether the node has an admin user: any node without an Outpost parent (the
// root of a hierarchy, or a node mirroring a generic registry).
func (c *Config) HasAdmin() bool { return !c.Connected() }

// ParsedConnectionString is the connection string, read; call after Validate.
func (c *Config) ParsedConnectionString() acrapi.ConnectionString {
	cs, _ := acrapi.ParseConnectionString(c.ConnectionString)
	return cs
}

func (c *Config) validateSync(fail func(key, format string, args ...any) error) error {
	if c.ConnectionString != "" {
		if _, err := acrapi.ParseConnectionString(c.ConnectionString); err != nil {
			return fail("connectionString", "is not valid: %v", strings.TrimPrefix(err.Error(), "connection string: "))
		}
		if c.Parent.URL != "" {
			return fail("parent.url", "is set together with a connection string, which names the parent already: keep one")
		}
		if len(c.Sync.Repositories) > 0 {
			return fail("sync.repositories", "is set together with a connection string: a connected registry syncs what its parent defines for it")
		}
	}
	if c.Admin.Password != "" && len(c.Admin.Password) < 12 {
		return fail("admin.password", "is too short: at least 12 characters")
	}
	if c.Parent.URL != "" {
		u, err := url.Parse(c.Parent.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return fail("parent.url", "%q is not a registry URL: expected http(s)://host[:port] with no path, query or credentials (set those in parent.username and parent.password)", c.Parent.URL)
		}
		if len(c.Sync.Repositories) == 0 {
			return fail("sync.repositories", "is empty but parent.url is set: list the repositories to mirror, such as [library/alpine, team/*]")
		}
	}
	if (c.Parent.Username == "") != (c.Parent.Password == "") {
		return fail("parent.password", "and parent.username must be set together")
	}
	if c.Parent.CAFile != "" {
		if _, err := os.Stat(c.Parent.CAFile); err != nil {
			return fail("parent.caFile", "%q cannot be read: %v", c.Parent.CAFile, unwrap(err))
		}
	}
	for i, p := range c.Sync.Repositories {
		if err := ValidateRepositoryPattern(p); err != nil {
			return fail("sync.repositories", "entry %d %v", i+1, err)
		}
	}
	for key, list := range map[string][]string{"sync.tags.include": c.Sync.Tags.Include, "sync.tags.exclude": c.Sync.Tags.Exclude} {
		for _, expr := range list {
			if _, err := regexp.Compile(expr); err != nil {
				return fail(key, "%q is not a regular expression: %v", expr, err)
			}
		}
	}
	for _, p := range c.Sync.Platforms {
		if !acrapi.ValidPlatform(p) {
			return fail("sync.platforms", "%q is not a platform: expected os/arch or os/arch/variant, such as linux/arm64 or linux/arm/v7", p)
		}
	}
	if _, err := CronParser.Parse(c.Sync.Schedule); err != nil {
		return fail("sync.schedule", "%q is not a 5-field cron expression (minute hour day-of-month month day-of-week, UTC): %v", c.Sync.Schedule, err)
	}
	if c.Sync.GCSchedule != "" {
		if _, err := CronParser.Parse(c.Sync.GCSchedule); err != nil {
			return fail("sync.gcSchedule", "%q is not a 5-field cron expression (minute hour day-of-month month day-of-week, UTC): %v", c.Sync.GCSchedule, err)
		}
	}
	if w := c.Sync.Window.Std(); w != 0 && (w < 60e9 || w > 7*24*3600e9) {
		return fail("sync.window", "%s is out of range: expected PT1M to P7D, or empty for no limit", c.Sync.Window)
	}
	if c.Sync.ChunkSizeMiB < 1 || c.Sync.ChunkSizeMiB > 1024 {
		return fail("sync.chunkSizeMiB", "%d is out of range: expected 1 to 1024", c.Sync.ChunkSizeMiB)
	}
	if c.Sync.BandwidthKiBps < 0 {
		return fail("sync.bandwidthKiBps", "%d is negative: expected 0 (no cap) or more", c.Sync.BandwidthKiBps)
	}
	if t := c.Sync.StallTimeout.Std(); t < 5e9 || t > 3600e9 {
		return fail("sync.stallTimeout", "%s is out of range: expected PT5S to PT1H", c.Sync.StallTimeout)
	}
	if c.Sync.Parallelism < 1 || c.Sync.Parallelism > 64 {
		return fail("sync.parallelism", "%d is out of range: expected 1 to 64", c.Sync.Parallelism)
	}
	return nil
}

// ValidateRepositoryPattern checks an exact repository name or a pattern ending in "/*", "/**",
// or the lone "*" or "**".
func ValidateRepositoryPattern(p string) error {
	if p == "*" || p == "**" {
		return nil
	}
	base := p
	if b, ok := strings.CutSuffix(p, "/**"); ok {
		base = b
	} else if b, ok := strings.CutSuffix(p, "/*"); ok {
		base = b
	}
	if strings.Contains(base, "*") {
		return fmt.Errorf("%q is not a repository pattern: a wildcard may only end it, as ns/* (one level) or ns/** (any depth)", p)
	}
	if _, err := reference.WithName(base); err != nil {
		return fmt.Errorf("%q is not a repository name: lower-case letters, digits and . _ - separators, components joined by /", p)
	}
	return nil
}

func unwrap(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
