package sync

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the sync engine's Prometheus collectors.
type metrics struct {
	bytesIn      prometheus.CounterFunc
	bytesOut     prometheus.CounterFunc
	refetched    prometheus.Counter
	blobsFetched prometheus.Counter
	blobsMounted prometheus.Counter
	corrupt      prometheus.Counter
	manifests    prometheus.Counter
	tagsRemoved  prometheus.Counter
	outboxQueued prometheus.Counter
	outboxPushed prometheus.Counter
	passDuration *prometheus.HistogramVec
	lastSuccess  prometheus.Gauge
	linkUp       prometheus.Gauge
	queue        prometheus.Gauge
	// Delta sync: layers rebuilt from deltas, deltas that failed (the layer was then fetched
	// whole), and the bytes saved against fetching those layers whole.
	deltaLayers    prometheus.Counter
	deltaFallbacks prometheus.Counter
	deltaSaved     prometheus.Counter
	layerBytes     prometheus.Counter
}

func newMetrics(meter *Meter) *metrics {
	opts := func(name, help string) prometheus.CounterOpts {
		return prometheus.CounterOpts{Namespace: "outpost", Subsystem: "sync", Name: name, Help: help}
	}
	return &metrics{
		bytesIn: prometheus.NewCounterFunc(opts("parent_received_bytes_total",
			"Bytes received from the parent: manifests, blobs, token and listing responses."), func() float64 { return float64(meter.In()) }),
		bytesOut: prometheus.NewCounterFunc(opts("parent_sent_bytes_total",
			"Bytes of request bodies sent to the parent."), func() float64 { return float64(meter.Out()) }),
		refetched: prometheus.NewCounter(opts("refetched_bytes_total",
			"Bytes received from the parent that were already stored or were discarded: skipped by a parent that ignores Range, or thrown away because a blob failed verification. Should stay near zero.")),
		blobsFetched: prometheus.NewCounter(opts("blobs_fetched_total", "Blobs fetched from the parent and verified.")),
		blobsMounted: prometheus.NewCounter(opts("blobs_mounted_total", "Blobs linked from another local repository instead of fetched.")),
		corrupt:      prometheus.NewCounter(opts("blobs_corrupt_total", "Blobs whose bytes from the parent failed verification and were fetched again.")),
		manifests:    prometheus.NewCounter(opts("manifests_synced_total", "Manifests (images, indexes, referrers) stored from the parent.")),
		tagsRemoved:  prometheus.NewCounter(opts("tags_removed_total", "Local tags removed because the parent no longer has them.")),
		outboxQueued: prometheus.NewCounter(opts("outbox_queued_total", "Images pushed to this ReadWrite node and queued for its parent.")),
		outboxPushed: prometheus.NewCounter(opts("outbox_pushed_total", "Queued images pushed to the parent.")),
		passDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "outpost", Subsystem: "sync", Name: "pass_duration_seconds",
			Help: "Duration of sync passes, by result.", Buckets: prometheus.ExponentialBuckets(0.05, 3, 12)}, []string{"result"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "outpost", Subsystem: "sync", Name: "last_success_timestamp_seconds",
			Help: "Unix time at which the last fully successful pass ended."}),
		linkUp: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "outpost", Subsystem: "sync", Name: "link_up",
			Help: "1 when the last exchange with the parent succeeded, 0 when it failed."}),
		queue: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "outpost", Subsystem: "sync", Name: "queue_length",
			Help: "Blobs waiting to be fetched in the current pass."}),
		deltaLayers:    prometheus.NewCounter(opts("delta_layers_total", "Layers rebuilt from a delta against layers this node held, digest-identical.")),
		deltaFallbacks: prometheus.NewCounter(opts("delta_fallbacks_total", "Deltas that could not be used (bad delta, base or recipe); the layer was fetched whole.")),
		deltaSaved: prometheus.NewCounter(opts("delta_saved_bytes_total",
			"Bytes not fetched thanks to deltas: the layers' sizes less their deltas' sizes. Bytes with layer transfer = parent_received_bytes_total + this.")),
		layerBytes: prometheus.NewCounter(opts("layer_bytes_total", "Sizes of the blobs this node stored from the parent, however they came (whole or as deltas).")),
	}
}

// Register adds the engine's collectors to reg.
func (e *Engine) Register(reg prometheus.Registerer) error {
	m := e.metrics
	for _, c := range []prometheus.Collector{m.bytesIn, m.bytesOut, m.refetched, m.blobsFetched, m.blobsMounted,
		m.corrupt, m.manifests, m.tagsRemoved, m.outboxQueued, m.outboxPushed, m.passDuration, m.lastSuccess, m.linkUp, m.queue,
		m.deltaLayers, m.deltaFallbacks, m.deltaSaved, m.layerBytes} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
