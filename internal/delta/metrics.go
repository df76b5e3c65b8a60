package delta

import "github.com/prometheus/client_golang/prometheus"

// metrics are a parent's view of the deltas it serves its children.
type metrics struct {
	plans          *prometheus.CounterVec
	prepared       prometheus.Counter
	computeSeconds prometheus.Counter
	leftOut        prometheus.Counter
	prepareQueue   prometheus.Gauge
}

// Results of a child's delta request, the label of outpost_delta_plans_total.
const (
	resultComputed    = "computed"    // computed for it (or for a child asking the same at once)
	resultCached      = "cached"      // computed earlier for the same request
	resultReused      = "reused"      // computed earlier for another request with the same bases
	resultUnavailable = "unavailable" // no delta: the child fetches the layer whole
	resultPending     = "pending"     // still computing: the child asks again
	resultFailed      = "failed"      // the parent could not compute it (a full disk): the layer goes whole
)

func newMetrics() *metrics {
	opts := func(name, help string) prometheus.CounterOpts {
		return prometheus.CounterOpts{Namespace: "outpost", Subsystem: "delta", Name: name, Help: help}
	}
	m := &metrics{
		plans: prometheus.NewCounterVec(opts("plans_total",
			"Children's delta requests, by result: computed, cached (the same request earlier), reused (another request with the same bases), unavailable (the layer goes whole), pending (asked to retry), failed (the parent could not compute it: a full disk; the layer goes whole)."),
			[]string{"result"}),
		prepared:       prometheus.NewCounter(opts("prepared_total", "Deltas computed ahead of the children's requests, when an image arrived.")),
		computeSeconds: prometheus.NewCounter(opts("compute_seconds_total", "Seconds spent computing deltas (one at a time), prepared or asked for.")),
		leftOut: prometheus.NewCounter(opts("patches_left_out_total",
			"Binary patches left out of deltas because they would take more memory than this node allows; those files went as larger zstd patches.")),
		prepareQueue: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "outpost", Subsystem: "delta", Name: "prepare_queue_images",
			Help: "Images whose deltas for the children are being prepared or wait to be (0: all prepared)."}),
	}
	for _, r := range []string{resultComputed, resultCached, resultReused, resultUnavailable, resultPending, resultFailed} {
		m.plans.WithLabelValues(r)
	}
	return m
}

// Register adds the service's collectors to reg.
func (s *Service) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{s.metrics.plans, s.metrics.prepared, s.metrics.computeSeconds, s.metrics.leftOut, s.metrics.prepareQueue} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
