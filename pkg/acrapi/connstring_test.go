package acrapi

import (
	"strings"
	"testing"
)

const good = "ConnectedRegistryName=siteA01;SyncTokenName=siteA01-sync-token;SyncTokenPassword=p4ss-w0rd_x;ParentGatewayEndpoint=parent.example:8443;ParentEndpointProtocol=https"

func TestParseConnectionString(t *testing.T) {
	c, err := ParseConnectionString(good)
	if err != nil {
		t.Fatal(err)
	}
	if c.ConnectedRegistryName != "siteA01" || c.SyncTokenPassword != "p4ss-w0rd_x" || c.URL() != "https://parent.example:8443" {
		t.Fatalf("parsed %+v", c)
	}
	if c.String() != good {
		t.Fatalf("String() = %q", c.String())
	}
	if c, err := ParseConnectionString(" " + strings.ReplaceAll(good, "https", "HTTP") + "; "); err != nil || c.ParentEndpointProtocol != "http" {
		t.Fatalf("tolerant forms refused: %v", err)
	}
}

func TestParseConnectionStringErrors(t *testing.T) {
	replace := func(old, new string) string { return strings.Replace(good, old, new, 1) }
	tests := map[string]string{
		"":                                  "field ConnectedRegistryName is missing",
		replace("SyncTokenName=", "Token="): `unknown field "Token"`,
		replace(";SyncTokenPassword=p4ss-w0rd_x", ""):                  "field SyncTokenPassword is missing",
		replace("SyncTokenPassword=p4ss-w0rd_x", "SyncTokenPassword="): "field SyncTokenPassword is missing or empty",
		replace("siteA01;", "s1;"):                                     "field ConnectedRegistryName: \"s1\" is not a connected registry name",
		replace("https", "ftp"):                                        "field ParentEndpointProtocol \"ftp\": expected http or https",
		replace("parent.example:8443", "https://parent.example"):       "without scheme or path",
		replace("parent.example:8443", "parent.example:99999"):         "port \"99999\"",
		replace("parent.example:8443", "parent.example/v2"):            "without scheme or path",
		good + ";SyncTokenName=again":                                  "field SyncTokenName appears twice",
		"garbage":                                                      "has no '='",
	}
	for in, want := range tests {
		_, err := ParseConnectionString(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseConnectionString(%q) = %v, want it to contain %q", in, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "p4ss-w0rd_x") {
			t.Errorf("error reveals the password: %v", err)
		}
	}
}

func FuzzParseConnectionString(f *testing.F) {
	f.Add(good)
	f.Add("a=b;c=d")
	f.Add("ConnectedRegistryName=abcde;;;=")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseConnectionString(s)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		back, err := ParseConnectionString(c.String())
		if err != nil || back != c {
			t.Fatalf("round trip of %q: %+v, %v", s, back, err)
		}
	})
}
