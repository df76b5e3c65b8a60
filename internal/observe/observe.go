// Package observe wraps HTTP handlers with one structured log line and Prometheus metrics per
// request, and reports the storage the node uses.
package observe

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// RouteFunc names the route of a request and the repository it addresses ("" when none).
// Route names must come from a small fixed set: they become metric labels.
type RouteFunc func(r *http.Request) (route, repository string)

// HTTPMetrics are the request collectors. Register them once with Register.
type HTTPMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	bytesIn  *prometheus.CounterVec
	bytesOut *prometheus.CounterVec
	inFlight prometheus.Gauge
}

// NewHTTPMetrics creates the request collectors.
func NewHTTPMetrics() *HTTPMetrics {
	return &HTTPMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outpost", Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests served, by route, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "outpost", Subsystem: "http", Name: "request_duration_seconds",
			Help:    "Time to serve an HTTP request, until the last byte of the response.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"route", "method"}),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outpost", Subsystem: "http", Name: "request_bytes_total",
			Help: "Bytes of request bodies received, by route.",
		}, []string{"route"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outpost", Subsystem: "http", Name: "response_bytes_total",
			Help: "Bytes of response bodies sent, by route.",
		}, []string{"route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "outpost", Subsystem: "http", Name: "requests_in_flight",
			Help: "HTTP requests being served now.",
		}),
	}
}

// Register adds the collectors to reg.
func (m *HTTPMetrics) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.bytesIn, m.bytesOut, m.inFlight} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Middleware logs each request to log (at info, or debug for the health and metrics probes
// listed in quiet) and records it in m.
func Middleware(next http.Handler, route RouteFunc, m *HTTPMetrics, log *zap.Logger, quiet ...string) http.Handler {
	quietRoutes := map[string]bool{}
	for _, q := range quiet {
		quietRoutes[q] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		name, repo := route(r)
		m.inFlight.Inc()
		defer m.inFlight.Dec()

		body := &countingBody{ReadCloser: r.Body}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = body
		}
		rec := &recorder{ResponseWriter: w}
		info := &requestInfo{}
		r = r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, info))
		defer func() {
			// A panic in a handler still gets its line and its 500 count before net/http
			// recovers it.
			status := rec.status
			if status == 0 {
				status = http.StatusOK
			}
			elapsed := time.Since(start)
			code := strconv.Itoa(status)
			m.requests.WithLabelValues(name, r.Method, code).Inc()
			m.duration.WithLabelValues(name, r.Method).Observe(elapsed.Seconds())
			m.bytesIn.WithLabelValues(name).Add(float64(body.n))
			m.bytesOut.WithLabelValues(name).Add(float64(rec.bytes))

			level := zapcore.InfoLevel
			if quietRoutes[name] && status < 400 {
				level = zapcore.DebugLevel
			}
			if ce := log.Check(level, "request"); ce != nil {
				ce.Write(
					zap.String("method", r.Method),
					zap.String("route", name),
					zap.String("repository", repo),
					zap.Int("status", status),
					zap.Int64("bytes_in", body.n),
					zap.Int64("bytes_out", rec.bytes),
					zap.Duration("duration", elapsed),
					zap.String("remote", r.RemoteAddr),
					zap.String("user", info.user),
				)
			}
		}()
		next.ServeHTTP(rec, r)
	})
}

// requestInfo is what handlers tell the request's log line.
type requestInfo struct {
	user string
}

type requestInfoKey struct{}

// SetUser names who made the request in its log line (a token, admin, anonymous); it does
// nothing outside Middleware.
func SetUser(ctx context.Context, user string) {
	if info, ok := ctx.Value(requestInfoKey{}).(*requestInfo); ok {
		info.user = user
	}
}

type countingBody struct {
	io.ReadCloser
	n int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}

// recorder captures the status and counts the body bytes of a response. It forwards Flush and
// ReadFrom (sendfile for blob GETs) so that wrapping costs no throughput.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := r.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(struct{ io.Writer }{r.ResponseWriter}, src)
	}
	r.bytes += n
	return n, err
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
