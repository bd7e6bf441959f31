package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// attack is one measured run against one webhook.
type attack struct {
	url    string
	client *http.Client
	// concurrency is the number of requests in flight at most (vegeta workers). With rate 0
	// it is also the number always in flight: a closed loop, as fast as the webhook answers.
	concurrency int
	rate        int           // requests per second; 0 = closed loop
	duration    time.Duration // 0 = until max requests
	max         int           // 0 = until duration
	body        func(seq uint64) []byte
	// check judges an answer's body once the run is over, so that decoding answers does not
	// take CPU from the webhook while it is measured.
	check func([]byte) error
}

// stats is what one attack measured.
type stats struct {
	requests int
	failed   int            // transport errors, non-2xx answers and wrong answers
	samples  map[string]int // failure messages, counted
	lat      []time.Duration
	elapsed  time.Duration // from the first request sent to the last answer
	// self is this process's CPU time while the requests ran (vegeta, its TLS client, the
	// in-process mirror), before the answers were checked.
	self time.Duration
}

func (a attack) run(ctx context.Context) stats {
	var seq atomic.Uint64
	header := http.Header{"Content-Type": []string{"application/json"}}
	targeter := func(t *vegeta.Target) error {
		t.Method, t.URL, t.Header = http.MethodPost, a.url, header
		t.Body = a.body(seq.Add(1) - 1)
		return nil
	}
	var pacer vegeta.Pacer = vegeta.ConstantPacer{} // zero value: no pause, the workers are the limit
	if a.rate > 0 {
		pacer = vegeta.ConstantPacer{Freq: a.rate, Per: time.Second}
	}
	if a.max > 0 {
		pacer = capped{pacer, uint64(a.max)} //nolint:gosec // G115: positive here
	}
	workers := uint64(max(1, a.concurrency)) //nolint:gosec // G115: at least 1
	atk := vegeta.NewAttacker(
		vegeta.Client(a.client),
		vegeta.Workers(workers),
		vegeta.MaxWorkers(workers),
		vegeta.Redirects(vegeta.NoFollow),
	)
	stop := context.AfterFunc(ctx, func() { atk.Stop() })
	defer stop()

	self := selfCPU()
	began := time.Now()
	var end time.Time
	st := stats{samples: map[string]int{}}
	var bodies [][]byte
	for res := range atk.Attack(vegeta.Targeter(targeter), pacer, a.duration, "") {
		st.requests++
		st.lat = append(st.lat, res.Latency)
		if e := res.Timestamp.Add(res.Latency); e.After(end) {
			end = e
		}
		if res.Error != "" {
			st.fail(res.Error)
			continue
		}
		bodies = append(bodies, res.Body)
	}
	st.elapsed = end.Sub(began)
	st.self = selfCPU() - self
	if a.check != nil {
		for _, b := range bodies {
			if err := a.check(b); err != nil {
				st.fail(err.Error())
			}
		}
	}
	if ctx.Err() != nil {
		st.fail("interrupted")
	}
	return st
}

// capped stops a pacer after max hits.
type capped struct {
	vegeta.Pacer
	max uint64
}

func (c capped) Pace(elapsed time.Duration, hits uint64) (time.Duration, bool) {
	if hits >= c.max {
		return 0, true
	}
	return c.Pacer.Pace(elapsed, hits)
}

func (s *stats) fail(msg string) {
	s.failed++
	if len(s.samples) < 5 || s.samples[msg] > 0 {
		s.samples[msg]++
	}
}

// merge adds another run's figures (several bursts reported as one row).
func (s *stats) merge(o stats) {
	s.requests += o.requests
	s.failed += o.failed
	for k, v := range o.samples {
		s.samples[k] += v
	}
	s.lat = append(s.lat, o.lat...)
	s.elapsed += o.elapsed
	s.self += o.self
}

// throughput is successful answers per second.
func (s stats) throughput() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.requests-s.failed) / s.elapsed.Seconds()
}

// quantile is the nearest-rank quantile of all latencies (exact, not estimated).
func (s stats) quantile(q float64) time.Duration {
	if len(s.lat) == 0 {
		return 0
	}
	if !sort.SliceIsSorted(s.lat, func(i, j int) bool { return s.lat[i] < s.lat[j] }) {
		slices.Sort(s.lat)
	}
	i := int(math.Ceil(q*float64(len(s.lat)))) - 1
	return s.lat[max(0, min(i, len(s.lat)-1))]
}

// failures describes the failures for the report.
func (s stats) failures() string {
	if s.failed == 0 {
		return ""
	}
	out := ""
	for msg, n := range s.samples {
		out += fmt.Sprintf("\n      %d× %s", n, msg)
	}
	return out
}
