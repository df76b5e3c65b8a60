package observe

import (
	"io/fs"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// StorageCollector reports the bytes and files under a directory. Walking a large store takes
// time, so a scrape reuses the last walk while it is younger than maxAge.
type StorageCollector struct {
	dir    string
	maxAge time.Duration

	mu     sync.Mutex
	at     time.Time
	bytes  int64
	files  int64
	bytesD *prometheus.Desc
	filesD *prometheus.Desc
}

// NewStorageCollector reports the storage used under dir, walking it at most once per maxAge.
func NewStorageCollector(dir string, maxAge time.Duration) *StorageCollector {
	return &StorageCollector{
		dir:    dir,
		maxAge: maxAge,
		bytesD: prometheus.NewDesc("outpost_storage_used_bytes", "Bytes stored in the data directory.", nil, nil),
		filesD: prometheus.NewDesc("outpost_storage_files", "Files stored in the data directory.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (s *StorageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.bytesD
	ch <- s.filesD
}

// Collect implements prometheus.Collector.
func (s *StorageCollector) Collect(ch chan<- prometheus.Metric) {
	b, f := s.Used()
	ch <- prometheus.MustNewConstMetric(s.bytesD, prometheus.GaugeValue, float64(b))
	ch <- prometheus.MustNewConstMetric(s.filesD, prometheus.GaugeValue, float64(f))
}

// Used returns the bytes and files under the directory, from a walk at most maxAge old.
func (s *StorageCollector) Used() (bytes, files int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.at.IsZero() && time.Since(s.at) < s.maxAge {
		return s.bytes, s.files
	}
	var b, f int64
	_ = filepath.WalkDir(s.dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a file removed during the walk is not an error
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				b += info.Size()
				f++
			}
		}
		return nil
	})
	s.at, s.bytes, s.files = time.Now(), b, f
	return b, f
}
