package faultnet

import (
	"sync"
	"time"
)

// Step is one entry of a script: wait After, then apply Do to the proxy.
type Step struct {
	After time.Duration
	Do    func(*Proxy)
}

// Flap is the script of a link that stays up for up, then goes down for down (resetting the
// open connections, see Down). Loop(Flap(20*time.Second, 3*time.Second)...) repeats it.
func Flap(up, down time.Duration) []Step {
	return []Step{{After: up, Do: (*Proxy).Down}, {After: down, Do: (*Proxy).Up}}
}

// Schedule is a script running against a proxy.
type Schedule struct {
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// Play runs steps once, in the background.
func (p *Proxy) Play(steps ...Step) *Schedule { return p.run(steps, false) }

// Loop runs steps over and over, in the background, until stopped or the proxy closes. It
// panics if the steps take no time, which would spin.
func (p *Proxy) Loop(steps ...Step) *Schedule {
	var total time.Duration
	for _, s := range steps {
		total += s.After
	}
	if total <= 0 {
		panic("faultnet: Loop of steps that take no time")
	}
	return p.run(steps, true)
}

func (p *Proxy) run(steps []Step, loop bool) *Schedule {
	s := &Schedule{stop: make(chan struct{}), done: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		close(s.done)
		return s
	}
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		defer close(s.done)
		for {
			for _, st := range steps {
				if !s.sleep(st.After, p.closing) {
					return
				}
				if st.Do != nil {
					st.Do(p)
				}
			}
			if !loop {
				return
			}
		}
	}()
	return s
}

func (s *Schedule) sleep(d time.Duration, closing <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.stop:
	case <-closing:
	}
	return false
}

// Stop ends the script and waits for a step in progress to finish. It leaves the proxy as the
// last step left it: call Up after stopping a Flap that may be in its down phase.
func (s *Schedule) Stop() {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
}

// Done is closed when the script has ended, by running out, Stop or the proxy's Close.
func (s *Schedule) Done() <-chan struct{} { return s.done }
