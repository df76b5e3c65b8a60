package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts the name of every environment variable that sets a key.
const EnvPrefix = "OUTPOST_"

// Sources records, per key path, where its value came from: "config file x.yaml line 3",
// "OUTPOST_LOG_LEVEL", "flag --log-level". Keys left at their default are absent.
type Sources map[string]string

// Error is a problem with one key. Its message is one line: which key, where it was set, what is
// wrong and what is expected.
type Error struct {
	Key    string
	Source string
	Msg    string
}

func (e *Error) Error() string {
	if e.Source == "" {
		return fmt.Sprintf("config key %s %s", e.Key, e.Msg)
	}
	return fmt.Sprintf("config key %s (from %s) %s", e.Key, e.Source, e.Msg)
}

// Override is one value set on the command line, for key path Key.
type Override struct {
	Key    string
	Value  string
	Source string // for example "flag --addr"
}

// Load builds the effective configuration: defaults, then the YAML file at path (if path is not
// empty), then OUTPOST_* variables from environ (KEY=value strings, as os.Environ returns), then
// overrides. It does not validate; call Validate with the returned Sources.
func Load(path string, environ []string, overrides []Override) (Config, Sources, error) {
	cfg := Default()
	src := Sources{}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return cfg, src, fmt.Errorf("config file: %w", err)
		}
		if err := decodeYAML(data, path, &cfg, src); err != nil {
			return cfg, src, err
		}
	}
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && (strings.HasPrefix(k, EnvPrefix) || EnvAliases[k] != "") {
			env[k] = v
		}
	}
	for _, alias := range sortedAliases() {
		if v, ok := env[alias]; ok && v != "" {
			key := EnvAliases[alias]
			if err := set(&cfg, key, v); err != nil {
				return cfg, src, &Error{Key: key, Source: alias, Msg: err.Error()}
			}
			src[key] = alias
		}
	}
	for _, key := range Keys() {
		name := EnvName(key)
		if v, ok := env[name]; ok {
			if err := set(&cfg, key, v); err != nil {
				return cfg, src, &Error{Key: key, Source: name, Msg: err.Error()}
			}
			src[key] = name
		}
	}
	for _, o := range overrides {
		if err := set(&cfg, o.Key, o.Value); err != nil {
			return cfg, src, &Error{Key: o.Key, Source: o.Source, Msg: err.Error()}
		}
		src[o.Key] = o.Source
	}
	return cfg, src, nil
}

// EnvAliases are environment variables read for a key besides its OUTPOST_ name, which wins:
// an existing IoT Edge deployment manifest works by swapping the image.
var EnvAliases = map[string]string{"ACR_REGISTRY_CONNECTION_STRING": "connectionString"}

func sortedAliases() []string {
	var out []string
	for a := range EnvAliases {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// EnvName is the environment variable that sets key path key.
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// leaf is one settable key of Config.
type leaf struct {
	key    string
	index  []int
	secret bool
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// leaves walks Config's fields: a struct is a section, anything else (or a type that reads its
// own text) is a leaf.
func leaves() []leaf {
	var out []leaf
	var walk func(t reflect.Type, prefix string, index []int)
	walk = func(t reflect.Type, prefix string, index []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			key := prefix + name
			idx := append(append([]int{}, index...), i)
			if f.Type.Kind() == reflect.Struct && !reflect.PointerTo(f.Type).Implements(textUnmarshaler) {
				walk(f.Type, key+".", idx)
				continue
			}
			out = append(out, leaf{key: key, index: idx, secret: f.Tag.Get("secret") == "true"})
		}
	}
	walk(reflect.TypeFor[Config](), "", nil)
	return out
}

// Keys lists every key path, sorted.
func Keys() []string {
	var keys []string
	for _, l := range leaves() {
		keys = append(keys, l.key)
	}
	sort.Strings(keys)
	return keys
}

func findLeaf(key string) (leaf, bool) {
	for _, l := range leaves() {
		if l.key == key {
			return l, true
		}
	}
	return leaf{}, false
}

// set parses text into the leaf at key.
func set(cfg *Config, key, text string) error {
	l, ok := findLeaf(key)
	if !ok {
		return fmt.Errorf("is not a configuration key")
	}
	v := reflect.ValueOf(cfg).Elem().FieldByIndex(l.index)
	return setText(v, text)
}

func setText(v reflect.Value, text string) error {
	if u, ok := v.Addr().Interface().(encoding.TextUnmarshaler); ok {
		if err := u.UnmarshalText([]byte(text)); err != nil {
			return errors.New(strings.TrimSpace(err.Error()))
		}
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(text)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(text))
		if err != nil {
			return fmt.Errorf("%q is not a boolean: expected true or false", text)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, err := strconv.ParseInt(strings.TrimSpace(text), 10, 64)
		if err != nil || v.OverflowInt(n) {
			return fmt.Errorf("%q is not a whole number", text)
		}
		v.SetInt(n)
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String || v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("cannot be set from text; use the config file")
		}
		m, err := parseStringMap(text)
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(m))
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("cannot be set from text; use the config file")
		}
		var items []string
		for _, s := range strings.Split(text, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, s)
			}
		}
		v.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("cannot be set from text; use the config file")
	}
	return nil
}

// parseStringMap reads "key=value,key2=value2" (a value may be empty: "docker.io="). An empty
// text is an empty (nil) map.
func parseStringMap(text string) (map[string]string, error) {
	var m map[string]string
	for _, item := range strings.Split(text, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		k, v, ok := strings.Cut(item, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not a key=value entry: expected comma-separated entries such as docker.io=,ghcr.io=ghcr", item)
		}
		if m == nil {
			m = map[string]string{}
		}
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("%q is set twice", k)
		}
		m[k] = v
	}
	return m, nil
}

// decodeYAML reads the file into cfg key by key, so that an unknown key or a bad value is
// reported with its key path and line.
func decodeYAML(data []byte, path string, cfg *Config, src Sources) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("config file %s: not valid YAML: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Content) == 0 {
		return nil // an empty file sets nothing
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("config file %s line %d: expected a mapping of keys to values at the top level", path, root.Line)
	}
	return decodeMapping(root, reflect.ValueOf(cfg).Elem(), "", path, src)
}

func decodeMapping(node *yaml.Node, v reflect.Value, prefix, path string, src Sources) error {
	t := v.Type()
	seen := map[string]bool{}
	for i := 0; i+1 < len(node.Content); i += 2 {
		k, val := node.Content[i], node.Content[i+1]
		key := prefix + k.Value
		where := fmt.Sprintf("config file %s line %d", path, k.Line)
		if seen[k.Value] {
			return &Error{Key: key, Source: where, Msg: "is set twice"}
		}
		seen[k.Value] = true
		field, ok := fieldByYAMLName(t, k.Value)
		if !ok {
			return &Error{Key: key, Source: where, Msg: "is not a configuration key" + suggest(t, k.Value, prefix)}
		}
		fv := v.FieldByIndex(field.Index)
		if field.Type.Kind() == reflect.Struct && !reflect.PointerTo(field.Type).Implements(textUnmarshaler) {
			if val.Kind != yaml.MappingNode {
				if val.Tag == "!!null" {
					continue
				}
				return &Error{Key: key, Source: where, Msg: "must be a mapping of keys to values"}
			}
			if err := decodeMapping(val, fv, key+".", path, src); err != nil {
				return err
			}
			continue
		}
		if err := decodeLeaf(val, fv); err != nil {
			return &Error{Key: key, Source: where, Msg: err.Error()}
		}
		src[key] = where
	}
	return nil
}

func decodeLeaf(val *yaml.Node, fv reflect.Value) error {
	if val.Kind == yaml.ScalarNode && val.Tag != "!!null" {
		// Scalars are parsed from their text, as environment variables are, so a quoted "8"
		// and a plain 8 mean the same, and a list key accepts "a, b".
		return setText(fv, val.Value)
	}
	if val.Kind == yaml.MappingNode && fv.Kind() == reflect.Map {
		var m map[string]string
		for i := 0; i+1 < len(val.Content); i += 2 {
			k, v := val.Content[i], val.Content[i+1]
			if k.Kind != yaml.ScalarNode || v.Kind != yaml.ScalarNode {
				return fmt.Errorf("must be a mapping of strings to strings")
			}
			if m == nil {
				m = map[string]string{}
			}
			if _, dup := m[k.Value]; dup {
				return fmt.Errorf("%q is set twice", k.Value)
			}
			value := v.Value
			if v.Tag == "!!null" {
				value = "" // docker.io: (nothing) means the same as docker.io: ""
			}
			m[k.Value] = value
		}
		fv.Set(reflect.ValueOf(m))
		return nil
	}
	if val.Kind == yaml.SequenceNode && fv.Kind() == reflect.Slice {
		var items []string
		for _, item := range val.Content {
			if item.Kind != yaml.ScalarNode {
				return fmt.Errorf("must be a list of strings")
			}
			items = append(items, item.Value)
		}
		fv.Set(reflect.ValueOf(items))
		return nil
	}
	if val.Tag == "!!null" {
		fv.Set(reflect.Zero(fv.Type()))
		return nil
	}
	return fmt.Errorf("must be a single value, not a %s", kindName(val.Kind))
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	default:
		return "YAML node"
	}
}

func fieldByYAMLName(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		n, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if n == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// suggest names the key the user probably meant (at most two letters off, ignoring case), or
// lists the keys of the section.
func suggest(t reflect.Type, name, prefix string) string {
	var names []string
	for i := range t.NumField() {
		n, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if n == "" || n == "-" {
			continue
		}
		if strings.EqualFold(n, name) || editDistance(strings.ToLower(n), strings.ToLower(name)) <= 2 {
			return fmt.Sprintf(": did you mean %s%s?", prefix, n)
		}
		names = append(names, prefix+n)
	}
	return ": expected one of " + strings.Join(names, ", ")
}

// Masked is what config print shows in place of a secret that is set.
const Masked = "*****"

// YAML renders cfg as a YAML document with every secret that is set replaced by Masked.
func (c Config) YAML() ([]byte, error) {
	masked := c
	v := reflect.ValueOf(&masked).Elem()
	for _, l := range leaves() {
		f := v.FieldByIndex(l.index)
		if l.secret && f.Kind() == reflect.String && f.String() != "" {
			f.SetString(Masked)
		}
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(masked); err != nil {
		return nil, err
	}
	return buf.Bytes(), enc.Close()
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
