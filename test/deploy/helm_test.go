// Package deploy_test checks the Helm chart in deploy/helm/outpost: it renders the chart with
// helm template for several sets of values and checks what Kubernetes would run.
package deploy_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/outpost-registry/outpost/internal/config"
)

// Minimal shapes of the rendered objects.
type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Type string            `yaml:"type"` // Secret
	Data map[string]string `yaml:"data"` // Secret
	Spec struct {
		// Service
		Type      string         `yaml:"type"`
		ClusterIP string         `yaml:"clusterIP"`
		Selector  map[string]any `yaml:"selector"` // a Service's labels; a StatefulSet's matchLabels
		Ports     []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort any    `yaml:"targetPort"`
			NodePort   int    `yaml:"nodePort"`
		} `yaml:"ports"`
		// StatefulSet
		Replicas    *int   `yaml:"replicas"`
		ServiceName string `yaml:"serviceName"`
		Template    struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
			Spec struct {
				StorageClassName *string  `yaml:"storageClassName"`
				AccessModes      []string `yaml:"accessModes"`
				Resources        struct {
					Requests map[string]string `yaml:"requests"`
				} `yaml:"resources"`
			} `yaml:"spec"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

type podSpec struct {
	EnableServiceLinks *bool `yaml:"enableServiceLinks"`
	SecurityContext    struct {
		RunAsNonRoot *bool `yaml:"runAsNonRoot"`
		RunAsUser    int   `yaml:"runAsUser"`
		FSGroup      int   `yaml:"fsGroup"`
	} `yaml:"securityContext"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name   string `yaml:"name"`
		Secret *struct {
			SecretName string `yaml:"secretName"`
		} `yaml:"secret"`
	} `yaml:"volumes"`
}

type container struct {
	Name  string `yaml:"name"`
	Image string `yaml:"image"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name      string  `yaml:"name"`
		Value     *string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	HTTPGet struct {
		Path   string `yaml:"path"`
		Port   any    `yaml:"port"`
		Scheme string `yaml:"scheme"`
	} `yaml:"httpGet"`
}

func chartDir(t *testing.T) string {
	return filepath.Join(repoRoot, "deploy", "helm", "outpost")
}

// helmBinary finds helm: $HELM, the repository's .tools/bin/helm (make helm), or PATH.
func helmBinary(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	local := filepath.Join(chartDir(t), "..", "..", "..", ".tools", "bin", "helm")
	if _, err := os.Stat(local); err == nil {
		return local
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	t.Skip("helm is not installed: run make helm")
	return ""
}

func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmBinary(t), args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if err != nil {
		return out.String(), errors.New(strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

func render(t *testing.T, set ...string) map[string]object {
	t.Helper()
	args := []string{"template", "rel", chartDir(t), "--namespace", "edge"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out, err := helm(t, args...)
	if err != nil {
		t.Fatalf("helm template %v: %v", set, err)
	}
	objs := map[string]object{}
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var o object
		if err := dec.Decode(&o); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, out)
		}
		if o.Kind == "" {
			continue
		}
		objs[o.Kind+"/"+o.Metadata.Name] = o
	}
	return objs
}

func TestHelmLint(t *testing.T) {
	for _, set := range [][]string{nil, {"connectionString=x"}, {"httpEnabled=false", "tls.secret=s"}} {
		args := []string{"lint", chartDir(t), "--strict"}
		for _, s := range set {
			args = append(args, "--set", s)
		}
		if out, err := helm(t, args...); err != nil {
			t.Errorf("helm lint %v: %v\n%s", set, err, out)
		}
	}
}

// readEnv is every environment variable the binary reads: the OUTPOST_ name of each config key,
// and the aliases.
func readEnv() map[string]bool {
	m := map[string]bool{}
	for _, k := range config.Keys() {
		m[config.EnvName(k)] = true
	}
	for alias := range config.EnvAliases {
		m[alias] = true
	}
	return m
}

func TestHelmTemplate(t *testing.T) {
	known := readEnv()
	connStr := "ConnectedRegistryName=edge;SyncTokenName=t;SyncTokenPassword=s3cr3t-PASSWORD;ParentGatewayEndpoint=parent:8080;ParentEndpointProtocol=http"
	tests := []struct {
		name        string
		set         []string
		secret      string // the Secret the connection string comes from; "" for none
		chartSecret bool   // the chart creates that Secret
		tls         string // the TLS Secret mounted; "" for plain HTTP
		env         map[string]string
		check       func(t *testing.T, objs map[string]object)
	}{
		{name: "defaults: a standalone node over HTTP",
			env: map[string]string{"OUTPOST_DATADIR": "/var/acr/data", "OUTPOST_SYNC_CHUNKSIZEMIB": "1"}},
		{name: "connection string in the chart's Secret",
			set:    []string{"connectionString=" + strings.ReplaceAll(connStr, ",", `\,`), "sync.chunkSizeInMb=4", "pvc.storageClassName=local-path", "pvc.storageRequest=50Gi"},
			secret: "rel-outpost", chartSecret: true,
			env: map[string]string{"OUTPOST_SYNC_CHUNKSIZEMIB": "4"},
			check: func(t *testing.T, objs map[string]object) {
				vct := objs["StatefulSet/rel-outpost"].Spec.VolumeClaimTemplates
				if len(vct) != 1 || vct[0].Metadata.Name != "data" || vct[0].Spec.StorageClassName == nil ||
					*vct[0].Spec.StorageClassName != "local-path" || vct[0].Spec.Resources.Requests["storage"] != "50Gi" {
					t.Errorf("volumeClaimTemplates = %+v", vct)
				}
			}},
		{name: "existing Secret, HTTPS from a TLS Secret, NodePort, mirror namespaces",
			set: []string{"existingSecret=my-conn", "httpEnabled=false", "tls.secret=my-tls", "service.type=NodePort",
				"service.port=443", "service.nodePort=30443", `mirrorNamespaces.ghcr\.io=ghcr`, `mirrorNamespaces.docker\.io=`},
			secret: "my-conn", tls: "my-tls",
			env: map[string]string{"OUTPOST_TLS_CERTFILE": "/etc/outpost/tls/tls.crt", "OUTPOST_TLS_KEYFILE": "/etc/outpost/tls/tls.key",
				"OUTPOST_MIRROR_NAMESPACES": "docker.io=,ghcr.io=ghcr"},
			check: func(t *testing.T, objs map[string]object) {
				svc := objs["Service/rel-outpost"]
				if svc.Spec.Type != "NodePort" || svc.Spec.Ports[0].Port != 443 || svc.Spec.Ports[0].NodePort != 30443 {
					t.Errorf("service = %+v", svc.Spec)
				}
			}},
		{name: "a TLS Secret alone serves HTTPS", set: []string{"tls.secret=my-tls"}, tls: "my-tls"},
		{name: "HTTPS from tls.crt and tls.key, fixed ClusterIP",
			set: []string{"httpEnabled=false", "tls.crt=CERT", "tls.key=KEY", "service.clusterIP=10.43.0.50", "resources.limits.memory=2Gi"},
			tls: "rel-outpost-tls",
			env: map[string]string{"OUTPOST_TLS_CERTFILE": "/etc/outpost/tls/tls.crt"},
			check: func(t *testing.T, objs map[string]object) {
				s := objs["Secret/rel-outpost-tls"]
				if s.Type != "kubernetes.io/tls" || s.Data["tls.crt"] != "Q0VSVA==" || s.Data["tls.key"] != "S0VZ" {
					t.Errorf("TLS secret = %+v", s)
				}
				if ip := objs["Service/rel-outpost"].Spec.ClusterIP; ip != "10.43.0.50" {
					t.Errorf("clusterIP = %q", ip)
				}
				if m := objs["StatefulSet/rel-outpost"].Spec.Template.Spec.Containers[0].Resources.Limits["memory"]; m != "2Gi" {
					t.Errorf("memory limit = %q", m)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs := render(t, tt.set...)
			sts, ok := objs["StatefulSet/rel-outpost"]
			if !ok {
				t.Fatalf("no StatefulSet rel-outpost in %v", keys(objs))
			}
			if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 1 {
				t.Errorf("replicas = %v, want 1", sts.Spec.Replicas)
			}
			pod := sts.Spec.Template.Spec
			if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
				t.Error("enableServiceLinks is not false: Kubernetes would inject OUTPOST_PORT and friends")
			}
			sc := pod.SecurityContext
			if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser != 65532 || sc.FSGroup != 65532 {
				t.Errorf("pod securityContext = %+v", sc)
			}
			if len(pod.Containers) != 1 {
				t.Fatalf("%d containers", len(pod.Containers))
			}
			c := pod.Containers[0]
			if c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
				t.Error("allowPrivilegeEscalation is not false")
			}
			if len(c.Ports) != 1 || c.Ports[0].ContainerPort != 8080 || c.Ports[0].Name != "http" {
				t.Errorf("ports = %+v, want http 8080", c.Ports)
			}
			wantScheme := ""
			if tt.tls != "" {
				wantScheme = "HTTPS"
			}
			for name, p := range map[string]*probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
				if p == nil || p.HTTPGet.Path != name || (p.HTTPGet.Port != "http" && p.HTTPGet.Port != 8080) || p.HTTPGet.Scheme != wantScheme {
					t.Errorf("probe on %s = %+v (scheme want %q)", name, p, wantScheme)
				}
			}
			mounts := map[string]string{}
			for _, m := range c.VolumeMounts {
				mounts[m.Name] = m.MountPath
			}
			if mounts["data"] != "/var/acr/data" {
				t.Errorf("volume mounts = %v: want data at /var/acr/data", mounts)
			}
			if len(sts.Spec.VolumeClaimTemplates) != 1 || sts.Spec.VolumeClaimTemplates[0].Metadata.Name != "data" {
				t.Errorf("no volumeClaimTemplate data")
			}

			// Environment: every variable is one the binary reads; the connection string only ever
			// comes from a Secret.
			env := map[string]string{}
			var connRef string
			for _, e := range c.Env {
				if !known[e.Name] {
					t.Errorf("env %s is not read by outpost (not a config key's OUTPOST_ name nor an alias)", e.Name)
				}
				if _, dup := env[e.Name]; dup {
					t.Errorf("env %s set twice", e.Name)
				}
				if e.Value != nil {
					env[e.Name] = *e.Value
					if strings.Contains(*e.Value, "SyncTokenPassword") || strings.Contains(*e.Value, "s3cr3t") {
						t.Errorf("env %s holds the connection string as a literal", e.Name)
					}
				} else {
					env[e.Name] = "<from>"
				}
				if e.Name == "ACR_REGISTRY_CONNECTION_STRING" || e.Name == config.EnvName("connectionString") {
					if e.Value != nil || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
						t.Errorf("%s is not from a secretKeyRef", e.Name)
					} else {
						connRef = e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
					}
				}
			}
			for k, v := range tt.env {
				if env[k] != v {
					t.Errorf("env %s = %q, want %q", k, env[k], v)
				}
			}
			if tt.secret == "" && connRef != "" {
				t.Errorf("connection string from %s, want none", connRef)
			}
			if tt.secret != "" && connRef != tt.secret+"/connectionString" {
				t.Errorf("connection string from %q, want %s/connectionString", connRef, tt.secret)
			}
			if s, ok := objs["Secret/"+tt.secret]; tt.chartSecret && (!ok || s.Data["connectionString"] == "") {
				t.Errorf("the chart did not create Secret %s with the connection string", tt.secret)
			}
			if !tt.chartSecret {
				if _, ok := objs["Secret/rel-outpost"]; ok {
					t.Error("the chart created a connection string Secret without a connection string")
				}
			}

			// TLS: the Secret is mounted where the env points.
			var tlsVolume string
			for _, v := range pod.Volumes {
				if v.Secret != nil {
					tlsVolume = v.Secret.SecretName
				}
			}
			if tlsVolume != tt.tls {
				t.Errorf("TLS secret volume = %q, want %q", tlsVolume, tt.tls)
			}
			if tt.tls != "" && mounts["tls"] != "/etc/outpost/tls" {
				t.Errorf("TLS secret not mounted at /etc/outpost/tls: %v", mounts)
			}
			if tt.tls == "" && (env["OUTPOST_TLS_CERTFILE"] != "" || env["OUTPOST_TLS_KEYFILE"] != "") {
				t.Error("TLS files set for plain HTTP")
			}

			svc, ok := objs["Service/rel-outpost"]
			if !ok {
				t.Fatalf("no Service rel-outpost")
			}
			if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort != "http" {
				t.Errorf("service ports = %+v: want one to the http port", svc.Spec.Ports)
			}
			for k, v := range svc.Spec.Selector {
				if s, ok := v.(string); !ok || sts.Spec.Template.Metadata.Labels[k] != s {
					t.Errorf("service selector %s=%s does not select the pod (%v)", k, v, sts.Spec.Template.Metadata.Labels)
				}
			}
			if tt.check != nil {
				tt.check(t, objs)
			}
		})
	}
}

// TestHelmRefusesBadValues: HTTPS without a certificate fails at render time with a clear message.
func TestHelmRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{[]string{"httpEnabled=false"}, "set tls.crt and tls.key, or tls.secret"},
		{[]string{"httpEnabled=false", "tls.crt=a"}, "tls.crt is set but tls.key is not"},
	} {
		args := []string{"template", "rel", chartDir(t)}
		for _, s := range tc.set {
			args = append(args, "--set", s)
		}
		if _, err := helm(t, args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("helm template %v: %v, want an error with %q", tc.set, err, tc.want)
		}
	}
}

func keys(m map[string]object) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
