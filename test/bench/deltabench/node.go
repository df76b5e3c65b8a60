package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// creds are the HTTP Basic credentials a node accepts: the admin's on a root or a mirroring
// child, a connected registry's own sync token on it.
type creds struct{ user, pass string }

type credTransport struct {
	base http.RoundTripper
	c    creds
}

func (t credTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.SetBasicAuth(t.c.user, t.c.pass)
	return t.base.RoundTrip(req)
}

// node is the child process. benchkit.Start checks readiness with the admin's credentials,
// which a connected registry does not accept, so the child is started here, with its own.
type node struct {
	name    string
	base    string
	cmd     *exec.Cmd
	logPath string
	creds   creds
	exited  chan struct{}
	waitErr error
}

// startNode starts cmd and waits until GET /v2/ on addr answers 200 to c.
func startNode(ctx context.Context, name string, cmd *exec.Cmd, addr, logPath string, c creds) (*node, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	setChildAttrs(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	n := &node{name: name, base: "http://" + addr, cmd: cmd, logPath: logPath, creds: c, exited: make(chan struct{})}
	go func() {
		n.waitErr = cmd.Wait()
		close(n.exited)
	}()
	if err := n.waitReady(ctx, 30*time.Second); err != nil {
		n.stop()
		return nil, fmt.Errorf("%s did not become ready on %s: %w%s", name, addr, err, n.logTail())
	}
	return n, nil
}

func (n *node) client(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: credTransport{base: &http.Transport{Proxy: nil, DisableCompression: true}, c: n.creds}}
}

func (n *node) waitReady(ctx context.Context, limit time.Duration) error {
	c := n.client(2 * time.Second)
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-n.exited:
			return fmt.Errorf("process exited: %v", n.waitErr)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.base+"/v2/", nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /v2/: %s", resp.Status)
			if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusTooManyRequests {
				return err // wrong credentials do not get better by asking again
			}
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("timed out after %s: %v", limit, last)
}

// stop ends the process: SIGTERM, then SIGKILL after a grace period.
func (n *node) stop() {
	select {
	case <-n.exited:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.exited
	}
}

// alive reports an error if the process has exited.
func (n *node) alive() error {
	select {
	case <-n.exited:
		return fmt.Errorf("%s exited: %v%s", n.name, n.waitErr, n.logTail())
	default:
		return nil
	}
}

// logTail is the end of the process's log, for error messages.
func (n *node) logTail() string {
	b, err := os.ReadFile(n.logPath)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return "\n--- " + n.name + " log (" + n.logPath + ") ---\n" + strings.TrimRight(string(b), "\n")
}
