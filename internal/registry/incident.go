package registry

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"syscall"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"go.uber.org/zap"

	"github.com/outpost-registry/outpost/internal/logging"
)

// maxIncidentBody bounds how much of a replaced 500 answer is kept for the log.
const maxIncidentBody = 16 << 10

// incidentWriter replaces the body of a 500 answer with an incident number, and logs the body
// under that number. distribution answers a storage failure with the driver's error as the
// detail ("filesystem: mkdir /var/lib/outpost/docker/registry/v2/repositories: not a
// directory"), which names the node's files to whoever asked. Every other answer passes through
// untouched, blob bodies by the underlying writer's sendfile path.
type incidentWriter struct {
	http.ResponseWriter
	req    *http.Request
	log    *zap.Logger
	status int
	body   bytes.Buffer // a held answer's, up to maxIncidentBody
}

// held reports whether the answer is a 500: its header waits for finish, its body is kept.
func (w *incidentWriter) held() bool { return w.status == http.StatusInternalServerError }

func (w *incidentWriter) WriteHeader(code int) {
	if code < http.StatusOK { // informational: the final answer is still to come
		w.ResponseWriter.WriteHeader(code)
		return
	}
	if w.status != 0 {
		return
	}
	w.status = code
	if !w.held() {
		w.ResponseWriter.WriteHeader(code)
	}
}

func (w *incidentWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.held() {
		w.keep(p)
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

func (w *incidentWriter) keep(p []byte) {
	if room := maxIncidentBody - w.body.Len(); room > 0 {
		w.body.Write(p[:min(len(p), room)])
	}
}

// ReadFrom keeps the underlying writer's sendfile path for blob bodies.
func (w *incidentWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.held() {
		return io.Copy(writerFunc(w.Write), r)
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(w.ResponseWriter, r)
}

func (w *incidentWriter) Flush() {
	if w.held() {
		return
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *incidentWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// finish sends a 500 answer held back: the incident number to the client (with 507 when the
// disk is full), the answer it replaces to the log.
func (w *incidentWriter) finish() {
	if !w.held() {
		return
	}
	incident := logging.Incident()
	w.log.Error("registry request failed", zap.String("method", w.req.Method), zap.String("path", w.req.URL.Path),
		zap.String("incident", incident), zap.ByteString("answer", w.body.Bytes()))
	h := w.ResponseWriter.Header()
	dropAnswerHeaders(h)
	status, what := http.StatusInternalServerError, "internal error"
	// distribution hands over its storage errors as text only. A full disk is worth telling the
	// client, whose push fails until an operator frees space: 507, as on /acr.
	if bytes.Contains(w.body.Bytes(), []byte(syscall.ENOSPC.Error())) {
		status, what = http.StatusInsufficientStorage, "the node has no room left on its disk"
	}
	h.Set("Content-Type", "application/json")
	h.Set("Docker-Distribution-API-Version", "registry/2.0")
	w.ResponseWriter.WriteHeader(status)
	_ = json.NewEncoder(w.ResponseWriter).Encode(errcode.Errors{errcode.ErrorCodeUnknown.WithMessage(logging.IncidentMessage(what, incident))})
}

// dropAnswerHeaders removes from h what describes the answer an error answer replaces: its
// body, and what it created or named.
func dropAnswerHeaders(h http.Header) {
	for _, k := range []string{"Content-Length", "Content-Range", "Content-Encoding", "Docker-Content-Digest", "Etag", "Location", "Range", "Docker-Upload-Uuid", "OCI-Subject", "OCI-Tag"} {
		h.Del(k)
	}
}

// writerFunc is an io.Writer made of a function.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
