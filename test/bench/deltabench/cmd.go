package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// command runs name with args under a time limit of its own. It runs in a process group of its
// own, which is killed whole when the limit passes or ctx ends (debootstrap, apt and npm start
// children of their own), and it dies with the benchmark. Its output is appended to logPath;
// the error of a failed command carries the end of it.
type command struct {
	dir     string
	env     []string // nil: this process's environment
	stdin   io.Reader
	stdout  io.Writer // besides the log, when set
	logPath string
	limit   time.Duration
}

func (c command) run(ctx context.Context, name string, args ...string) error {
	if c.limit <= 0 {
		c.limit = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, c.limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env, cmd.Stdin = c.dir, c.env, c.stdin
	setGroupAttrs(cmd)
	cmd.WaitDelay = 10 * time.Second
	var tail tailBuffer
	var out io.Writer = &tail
	if c.logPath != "" {
		if err := os.MkdirAll(filepath.Dir(c.logPath), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		fmt.Fprintf(f, "\n$ %s %s\n", name, strings.Join(args, " "))
		out = io.MultiWriter(f, &tail)
	}
	cmd.Stderr = out
	cmd.Stdout = out
	if c.stdout != nil {
		cmd.Stdout = io.MultiWriter(c.stdout, out)
	}
	err := cmd.Run()
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("%w (time limit %s)", err, c.limit)
		}
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail.String())
	}
	return nil
}

// output runs the command and returns its standard output.
func (c command) output(ctx context.Context, name string, args ...string) ([]byte, error) {
	var b bytes.Buffer
	c.stdout = &b
	err := c.run(ctx, name, args...)
	return b.Bytes(), err
}

// tailBuffer keeps the last 3000 bytes written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 3000 {
		t.b = t.b[len(t.b)-3000:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return strings.TrimSpace(string(t.b)) }
