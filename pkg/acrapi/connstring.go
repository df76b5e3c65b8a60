package acrapi

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
)

// ConnectionString is what a node needs to activate under its parent, in the form Azure's
// connected registry uses:
//
//	ConnectedRegistryName=…;SyncTokenName=…;SyncTokenPassword=…;ParentGatewayEndpoint=host[:port];ParentEndpointProtocol=http|https
type ConnectionString struct {
	ConnectedRegistryName  string
	SyncTokenName          string
	SyncTokenPassword      string
	ParentGatewayEndpoint  string // host or host:port
	ParentEndpointProtocol string // http or https
}

// connection string keys, in the order String writes them.
var connKeys = []string{"ConnectedRegistryName", "SyncTokenName", "SyncTokenPassword", "ParentGatewayEndpoint", "ParentEndpointProtocol"}

var registryNameRE = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9]{4,39}$`)

// ValidateRegistryName checks a connected registry's name: 5 to 40 letters and digits, a letter
// first.
func ValidateRegistryName(name string) error {
	if !registryNameRE.MatchString(name) {
		return fmt.Errorf("%q is not a connected registry name: expected 5 to 40 letters and digits, starting with a letter", name)
	}
	return nil
}

// ParseConnectionString reads s. Errors name the field that is wrong and what is expected;
// they never contain the password.
func ParseConnectionString(s string) (ConnectionString, error) {
	var c ConnectionString
	fields := map[string]*string{
		"ConnectedRegistryName": &c.ConnectedRegistryName, "SyncTokenName": &c.SyncTokenName,
		"SyncTokenPassword": &c.SyncTokenPassword, "ParentGatewayEndpoint": &c.ParentGatewayEndpoint,
		"ParentEndpointProtocol": &c.ParentEndpointProtocol,
	}
	seen := map[string]bool{}
	for _, part := range strings.Split(strings.TrimSpace(s), ";") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		key, value, ok := strings.Cut(part, "=")
		key = strings.TrimSpace(key)
		if !ok {
			return c, fmt.Errorf("connection string: %q has no '=': expected Key=value pairs separated by ';'", clip(key))
		}
		dst, known := fields[key]
		if !known {
			return c, fmt.Errorf("connection string: unknown field %q: expected %s", clip(key), strings.Join(connKeys, ", "))
		}
		if seen[key] {
			return c, fmt.Errorf("connection string: field %s appears twice", key)
		}
		seen[key] = true
		*dst = strings.TrimSpace(value)
	}
	for _, k := range connKeys {
		if *fields[k] == "" {
			return c, fmt.Errorf("connection string: field %s is missing or empty", k)
		}
	}
	if err := ValidateRegistryName(c.ConnectedRegistryName); err != nil {
		return c, fmt.Errorf("connection string: field ConnectedRegistryName: %v", err)
	}
	if strings.ContainsAny(c.SyncTokenName, " \t/:") {
		return c, fmt.Errorf("connection string: field SyncTokenName %q must not contain spaces, '/' or ':'", clip(c.SyncTokenName))
	}
	c.ParentEndpointProtocol = strings.ToLower(c.ParentEndpointProtocol)
	if c.ParentEndpointProtocol != "http" && c.ParentEndpointProtocol != "https" {
		return c, fmt.Errorf("connection string: field ParentEndpointProtocol %q: expected http or https", clip(c.ParentEndpointProtocol))
	}
	if err := validEndpoint(c.ParentGatewayEndpoint); err != nil {
		return c, fmt.Errorf("connection string: field ParentGatewayEndpoint %q: %v", clip(c.ParentGatewayEndpoint), err)
	}
	return c, nil
}

func validEndpoint(ep string) error {
	if strings.Contains(ep, "://") || strings.ContainsAny(ep, "/?#@ ") {
		return fmt.Errorf("expected host or host:port, without scheme or path (the scheme is ParentEndpointProtocol)")
	}
	host := ep
	if h, port, err := net.SplitHostPort(ep); err == nil {
		p, perr := strconv.Atoi(port)
		if perr != nil || p < 1 || p > 65535 {
			return fmt.Errorf("port %q is not a number from 1 to 65535", port)
		}
		host = h
	} else if strings.Count(ep, ":") == 1 {
		return fmt.Errorf("expected host or host:port")
	}
	if host == "" {
		return fmt.Errorf("the host is empty")
	}
	return nil
}

// clip bounds what an error quotes of the input.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// URL is the parent's base URL.
func (c ConnectionString) URL() string {
	return c.ParentEndpointProtocol + "://" + c.ParentGatewayEndpoint
}

// String writes the connection string, password included.
func (c ConnectionString) String() string {
	return "ConnectedRegistryName=" + c.ConnectedRegistryName + ";SyncTokenName=" + c.SyncTokenName +
		";SyncTokenPassword=" + c.SyncTokenPassword + ";ParentGatewayEndpoint=" + c.ParentGatewayEndpoint +
		";ParentEndpointProtocol=" + c.ParentEndpointProtocol
}
