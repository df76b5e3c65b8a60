package main

import (
	"time"

	"github.com/outpost-registry/outpost/test/faultnet"
)

// linkMonitor samples a link and adds up how long it was up, and how long of that it carried
// nothing downstream: time a consumer left the link idle, waiting on round trips, on backoff
// after an outage, or not asking at all.
type linkMonitor struct {
	stop chan struct{}
	done chan struct{}

	up, idleUp time.Duration
	// idleRecovering is the part of idleUp within recoveryWindow of the link coming back up
	// after an outage: time lost to a consumer's reconnecting and backing off.
	idleRecovering time.Duration
}

const recoveryWindow = 5 * time.Second

const monitorTick = 100 * time.Millisecond

func monitorLink(p *faultnet.Proxy) *linkMonitor {
	m := &linkMonitor{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		t := time.NewTicker(monitorTick)
		defer t.Stop()
		last := p.Stats().BytesDown
		var backUp time.Time // when the last outage ended
		wasDown := false
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
			down := p.Stats().BytesDown
			isDown := p.IsDown()
			if wasDown && !isDown {
				backUp = time.Now()
			}
			wasDown = isDown
			if !isDown {
				m.up += monitorTick
				if down == last {
					m.idleUp += monitorTick
					if !backUp.IsZero() && time.Since(backUp) < recoveryWindow {
						m.idleRecovering += monitorTick
					}
				}
			}
			last = down
		}
	}()
	return m
}

// finish stops sampling and returns the time the link was up, up but idle, and idle in the
// first seconds after an outage.
func (m *linkMonitor) finish() (up, idleUp, idleRecovering time.Duration) {
	close(m.stop)
	<-m.done
	return m.up, m.idleUp, m.idleRecovering
}
