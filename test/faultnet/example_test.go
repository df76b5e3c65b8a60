package faultnet_test

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"time"

	"github.com/outpost-registry/outpost/test/faultnet"
)

// A parent that throttles the first blob request, behind a 1 MiB/s satellite link with 300 ms
// each way that drops for 3 s every 20 s. The child is pointed at link.URL().
func Example() {
	var parentHandler http.Handler = http.NotFoundHandler() // the parent registry under test

	faults := faultnet.NewHTTPFaults(parentHandler)
	faults.Add(faultnet.Rule{
		Method: http.MethodGet,
		Path:   regexp.MustCompile(`/blobs/`),
		Times:  1,
		Action: faultnet.RetryAfter(http.StatusTooManyRequests, 2*time.Second),
	})
	parent := httptest.NewServer(faults)
	defer parent.Close()

	link, err := faultnet.NewProxy(parent.Listener.Addr().String(),
		faultnet.WithBandwidth(faultnet.Both, 1<<20),
		faultnet.WithLatency(faultnet.Both, 300*time.Millisecond))
	if err != nil {
		panic(err)
	}
	defer link.Close()
	link.Loop(faultnet.Flap(20*time.Second, 3*time.Second)...)

	_ = link.URL() // configure the child's upstream with this
}
