package acrapi

import (
	"regexp"
	"strings"
)

var platformRE = regexp.MustCompile(`^[a-z0-9_.-]+/[a-z0-9_.-]+(/[a-z0-9_.-]+)?$`)

// ValidPlatform reports whether p names a platform as sync.platforms and
// StatusReport.Platforms do: os/arch or os/arch/variant, in lower case.
func ValidPlatform(p string) bool { return platformRE.MatchString(p) }

// PlatformMatches reports whether want (os/arch[/variant]) names the platform of os, arch and
// variant; a want without a variant names every variant.
func PlatformMatches(want, os, arch, variant string) bool {
	wantOS, rest, _ := strings.Cut(want, "/")
	wantArch, wantVariant, _ := strings.Cut(rest, "/")
	return os == wantOS && arch == wantArch && (wantVariant == "" || variant == wantVariant)
}
