package e2e

// Helpers that build the binary, start and stop outpost nodes as real processes, and run the
// binary's other commands.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// outpostBinary is the binary under test, set by TestMain.
var outpostBinary string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	outpostBinary = os.Getenv("OUTPOST_E2E_BINARY")
	if outpostBinary == "" {
		dir, err := os.MkdirTemp("", "outpost-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		outpostBinary = filepath.Join(dir, "outpost")
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", outpostBinary, "github.com/outpost-registry/outpost/cmd/outpost")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: building outpost:", err)
			return 1
		}
	}
	if fi, err := os.Stat(outpostBinary); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		fmt.Fprintf(os.Stderr, "e2e: OUTPOST_E2E_BINARY=%s is not an executable file (%v)\n", outpostBinary, err)
		return 1
	}
	return m.Run()
}

// testContext is a context that ends with the test or after limit, whichever comes first.
func testContext(t testing.TB, limit time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	t.Cleanup(cancel)
	return ctx
}

// baseEnv is the test's environment without OUTPOST_* variables, so that a developer's settings
// cannot leak into a node.
func baseEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OUTPOST_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// freeAddr picks a free loopback port: listen on port 0, note the port, close.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("picking a free port: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// syncBuffer collects a process's stderr; safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// process is one run of the outpost binary.
type process struct {
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{} // closed when the process has exited
	err  error         // cmd.Wait's result, valid after done
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tlsFiles are the certificate and key a node serves HTTPS with, and a pool that trusts them.
type tlsFiles struct {
	certFile, keyFile string
	pool              *x509.CertPool
}

// nodeOptions configure startNode. The zero value is a plain HTTP node with a fresh data
// directory.
type nodeOptions struct {
	dataDir string   // default: a new t.TempDir()
	args    []string // extra flags for outpost serve
	env     []string // extra KEY=value environment entries
	tls     *tlsFiles
	// selfSigned serves HTTPS with the certificate the node generates at its first start; the
	// client trusts exactly that certificate once the node is up.
	selfSigned bool
	// cgroup is a cgroup directory the process joins before outpost starts, as in a container
	// whose limits it reads at startup.
	cgroup string
}

// node is an outpost serve process (and its restarts) on one loopback address and data directory.
type node struct {
	t         testing.TB
	addr      string // 127.0.0.1:port
	dataDir   string
	opts      nodeOptions
	scheme    string
	transport *http.Transport
	client    *http.Client

	mu    sync.Mutex
	procs []*process // every process started for this node; the last is the current one
	// user and password are what n.client sends (HTTP Basic) unless a request has its own
	// Authorization: the admin on a node without a parent, the node's own sync token on a
	// connected registry. login changes them.
	user, password string
}

// testAdminPassword is every test node's admin password, unless a test sets its own.
const testAdminPassword = "e2e-admin-password-0123456789"

// parentCredentials is the YAML of a child's parent.username and parent.password for a parent
// with the test admin password.
const parentCredentials = "  username: admin\n  password: " + testAdminPassword + "\n"

// login makes n.client send these credentials from now on; an empty user sends none.
func (n *node) login(user, password string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.user, n.password = user, password
}

func (n *node) credentials() (string, string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.user, n.password
}

// withCredentials wraps base so that requests carry n's current credentials.
func (n *node) withCredentials(base http.RoundTripper) http.RoundTripper {
	return credentialTransport{base: base, creds: n.credentials}
}

// credentialTransport adds HTTP Basic credentials to requests that have no Authorization.
type credentialTransport struct {
	base  http.RoundTripper
	creds func() (string, string)
}

func (c credentialTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if user, pass := c.creds(); user != "" && req.Header.Get("Authorization") == "" {
		req = req.Clone(req.Context())
		req.SetBasicAuth(user, pass)
	}
	return c.base.RoundTrip(req)
}

// defaultCredentials gives a node about to start its admin password, or its own sync token when
// it is a connected registry, and logs its client in with them.
func (n *node) defaultCredentials() {
	cs := ""
	for _, kv := range n.opts.env {
		if v, ok := strings.CutPrefix(kv, "ACR_REGISTRY_CONNECTION_STRING="); ok {
			cs = v
		}
		if v, ok := strings.CutPrefix(kv, "OUTPOST_CONNECTIONSTRING="); ok {
			cs = v
		}
	}
	for i, a := range n.opts.args {
		if a == "--connection-string" && i+1 < len(n.opts.args) {
			cs = n.opts.args[i+1]
		} else if v, ok := strings.CutPrefix(a, "--connection-string="); ok {
			cs = v
		}
	}
	if cs != "" {
		c, err := acrapi.ParseConnectionString(cs)
		if err == nil {
			n.login(c.SyncTokenName, c.SyncTokenPassword)
		}
		return
	}
	password := testAdminPassword
	for _, kv := range n.opts.env {
		if v, ok := strings.CutPrefix(kv, "OUTPOST_ADMIN_PASSWORD="); ok {
			password = v
		}
	}
	if password == testAdminPassword {
		n.opts.env = append(n.opts.env, "OUTPOST_ADMIN_PASSWORD="+testAdminPassword)
	}
	n.login("admin", password)
}

// startNode starts outpost serve on a free loopback port and waits until /readyz answers 200.
// The process is killed when the test ends; its log is printed if the test failed.
func startNode(t testing.TB, opts nodeOptions) *node {
	t.Helper()
	if opts.dataDir == "" {
		opts.dataDir = t.TempDir()
	}
	n := &node{t: t, dataDir: opts.dataDir, opts: opts, scheme: "http"}
	n.defaultCredentials()
	tr := &http.Transport{
		Proxy:                 nil, // loopback only, whatever the environment says
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
	}
	if opts.tls != nil {
		n.scheme = "https"
		tr.TLSClientConfig = &tls.Config{RootCAs: opts.tls.pool, MinVersion: tls.VersionTLS12}
	}
	if opts.selfSigned {
		// Until the node has generated its certificate there is nothing to trust: /readyz is
		// polled without verification, then the transport trusts only the generated one.
		n.scheme = "https"
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	}
	n.transport = tr
	n.client = &http.Client{Transport: n.withCredentials(tr)}
	t.Cleanup(func() {
		n.stop()
		tr.CloseIdleConnections()
		if t.Failed() {
			n.dumpLogs()
		}
	})
	// Another test may grab the port between freeAddr and the node's listen: try a few ports.
	for attempt := 1; ; attempt++ {
		n.addr = freeAddr(t)
		err := n.startProcess()
		if err == nil {
			if opts.selfSigned {
				pool := x509.NewCertPool()
				pem, err := os.ReadFile(n.generatedCert())
				if err != nil || !pool.AppendCertsFromPEM(pem) {
					t.Fatalf("the generated certificate %s: %v", n.generatedCert(), err)
				}
				tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
				tr.CloseIdleConnections()
			}
			return n
		}
		if attempt == 3 || !strings.Contains(err.Error(), "already in use") {
			t.Fatalf("starting outpost: %v", err)
		}
	}
}

func (n *node) current() *process {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.procs[len(n.procs)-1]
}

// generatedCert is where a node started with selfSigned keeps its certificate.
func (n *node) generatedCert() string { return filepath.Join(n.dataDir, "outpost", "tls", "tls.crt") }

// base is the node's URL without a path, such as http://127.0.0.1:41234.
func (n *node) base() string { return n.scheme + "://" + n.addr }

// startProcess starts a process on n.addr and n.dataDir and waits for it to be ready.
func (n *node) startProcess() error {
	args := []string{"serve", "--addr", n.addr, "--data", n.dataDir, "--log-format", "json"}
	if n.opts.tls != nil {
		args = append(args, "--tls-cert", n.opts.tls.certFile, "--tls-key", n.opts.tls.keyFile)
	}
	if n.opts.selfSigned {
		args = append(args, "--tls-self-signed")
	}
	args = append(args, n.opts.args...)
	cmd := exec.Command(outpostBinary, args...)
	if n.opts.cgroup != "" {
		// The shell joins the cgroup, then becomes outpost (the same process).
		cmd = exec.Command("sh", append([]string{"-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, n.opts.cgroup, outpostBinary}, args...)...)
	}
	p := &process{cmd: cmd, log: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = baseEnv(n.opts.env...)
	p.cmd.Stdout = p.log
	p.cmd.Stderr = p.log
	p.cmd.SysProcAttr = sysProcAttr()
	if err := p.cmd.Start(); err != nil {
		return err
	}
	n.mu.Lock()
	n.procs = append(n.procs, p)
	n.mu.Unlock()
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return n.waitReady(p, 20*time.Second)
}

// waitReady polls /readyz until it answers 200, the process exits, or limit passes.
func (n *node) waitReady(p *process, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last string
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("outpost exited before it was ready (%v); its log:\n%s", p.err, p.log.String())
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.base()+"/readyz", nil)
		resp, err := n.client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				cancel()
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		cancel()
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("outpost was not ready within %s (last /readyz: %s); its log:\n%s", limit, last, p.log.String())
}

// restart starts a new process on the same address and data directory; the previous one must
// have exited.
func (n *node) restart() {
	n.t.Helper()
	if p := n.current(); !p.exited() {
		n.t.Fatalf("restart: the previous process (pid %d) is still running", p.cmd.Process.Pid)
	}
	n.transport.CloseIdleConnections()
	if err := n.startProcess(); err != nil {
		n.t.Fatalf("restarting outpost: %v", err)
	}
}

// signal sends sig to the current process.
func (n *node) signal(sig os.Signal) {
	n.t.Helper()
	if err := n.current().cmd.Process.Signal(sig); err != nil {
		n.t.Fatalf("sending %v to outpost: %v", sig, err)
	}
}

// kill sends SIGKILL to the current process and waits for it to exit.
func (n *node) kill() {
	n.t.Helper()
	p := n.current()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		n.t.Fatalf("outpost (pid %d) did not exit within 10s of SIGKILL", p.cmd.Process.Pid)
	}
	n.transport.CloseIdleConnections()
}

// waitExit waits up to limit for the current process to exit and returns its exit code (-1 when
// a signal ended it); ok is false if it is still running.
func (n *node) waitExit(limit time.Duration) (code int, ok bool) {
	p := n.current()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), true
	case <-time.After(limit):
		return 0, false
	}
}

// logs is the current process's log so far.
func (n *node) logs() string { return n.current().log.String() }

// stop kills every process of the node that still runs.
func (n *node) stop() {
	n.mu.Lock()
	procs := append([]*process(nil), n.procs...)
	n.mu.Unlock()
	for _, p := range procs {
		if p.exited() {
			continue
		}
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
		}
	}
}

func (n *node) dumpLogs() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, p := range n.procs {
		n.t.Logf("---- outpost process %d of %d (%s), exit: %v ----\n%s", i+1, len(n.procs),
			strings.Join(p.cmd.Args, " "), p.err, p.log.String())
	}
}

// cmdResult is the outcome of one run of the binary.
type cmdResult struct {
	code           int
	stdout, stderr string
}

// runOutpost runs the binary with args and env (beside baseEnv) and waits at most 20s.
func runOutpost(t testing.TB, env []string, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, outpostBinary, args...)
	cmd.Env = baseEnv(env...)
	cmd.Dir = t.TempDir()
	cmd.SysProcAttr = sysProcAttr()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("outpost %s did not exit within 20s; stderr:\n%s", strings.Join(args, " "), stderr.String())
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("running outpost %s: %v", strings.Join(args, " "), err)
	}
	return cmdResult{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
}
