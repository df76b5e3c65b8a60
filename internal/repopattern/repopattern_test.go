package repopattern

import "testing"

func TestValidate(t *testing.T) {
	for _, ok := range []string{"*", "**", "alpine", "library/alpine", "team/*", "team/**", "a.b/c-d_e"} {
		if err := Validate(ok); err != nil {
			t.Errorf("Validate(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "team/App", "team/*/x", "te*m", "/a", "a//b", "team/***"} {
		if err := Validate(bad); err == nil {
			t.Errorf("Validate(%q) accepted", bad)
		}
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"*", "a/b/c", true},
		{"**", "a", true},
		{"team/*", "team/app", true},
		{"team/*", "team/app/x", false},
		{"team/*", "team", false},
		{"team/*", "teamx/app", false},
		{"team/**", "team/app/x", true},
		{"team/**", "team", false},
		{"team/**", "teamx/a", false},
		{"alpine", "alpine", true},
		{"alpine", "alpine2", false},
	}
	for _, tt := range tests {
		if got := Match(tt.pattern, tt.name); got != tt.want {
			t.Errorf("Match(%q, %q) = %v", tt.pattern, tt.name, got)
		}
	}
}

func TestCovers(t *testing.T) {
	tests := []struct {
		outer, inner string
		want         bool
	}{
		{"*", "team/**", true},
		{"team/**", "*", false},
		{"team/**", "team/**", true},
		{"team/**", "team/*", true},
		{"team/**", "team/sub/*", true},
		{"team/**", "team/sub/**", true},
		{"team/**", "team/app", true},
		{"team/**", "other/*", false},
		{"team/**", "teamx/*", false},
		{"team/*", "team/*", true},
		{"team/*", "team/app", true},
		{"team/*", "team/sub/*", false},
		{"team/*", "team/**", false},
		{"team/app", "team/app", true},
		{"team/app", "team/*", false},
		{"a", "b", false},
	}
	for _, tt := range tests {
		if got := Covers(tt.outer, tt.inner); got != tt.want {
			t.Errorf("Covers(%q, %q) = %v, want %v", tt.outer, tt.inner, got, tt.want)
		}
	}
}

// FuzzCovers checks containment against matching: if outer covers inner, every name inner
// matches, outer matches too.
func FuzzCovers(f *testing.F) {
	f.Add("team/**", "team/sub/*", "team/sub/x")
	f.Add("team/*", "team/app", "team/app")
	f.Add("*", "a/**", "a/b")
	f.Fuzz(func(t *testing.T, outer, inner, name string) {
		if Validate(outer) != nil || Validate(inner) != nil || Validate(name) != nil || name == "*" || name == "**" {
			return
		}
		if Covers(outer, inner) && Match(inner, name) && !Match(outer, name) {
			t.Fatalf("%q covers %q, which matches %q, but %q does not", outer, inner, name, outer)
		}
	})
}
