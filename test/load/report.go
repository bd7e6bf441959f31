package main

import (
	"fmt"
	"text/tabwriter"
	"time"
)

func (h *harness) report(rows map[string]row, order []string) error {
	w := tabwriter.NewWriter(h.out, 0, 0, 2, ' ', tabwriter.AlignRight)
	_, _ = fmt.Fprintln(w, "scenario\trequests\treq/s\tp50\tp90\tp99\terrors\twebhook CPU/req\tloadgen CPU/req\tregistry\tpeak RSS\t")
	var problems []string
	for _, name := range order {
		r := rows[name]
		_, _ = fmt.Fprintf(w, "%s\t%d\t%.0f\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t\n", r.name, r.st.requests, r.st.throughput(),
			ms(r.st.quantile(.5)), ms(r.st.quantile(.9)), ms(r.st.quantile(.99)), r.st.failed,
			perRequest(r.cpu, r.st.requests), perRequest(r.genCPU, r.st.requests), r.registry, mib(r.peak))
		if r.st.failed > 0 {
			problems = append(problems, fmt.Sprintf("%s: %d failed requests:%s", r.name, r.st.failed, r.st.failures()))
		}
		if r.broken != "" {
			problems = append(problems, r.name+": "+r.broken)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	_, _ = fmt.Fprintln(h.out, "\nreq/s: answers per second of the measured run; p50/p90/p99: exact latency percentiles, client side;")
	_, _ = fmt.Fprintln(h.out, "errors: failed requests and wrong answers (not allowed, a warning, an image left unpinned);")
	_, _ = fmt.Fprintln(h.out, "webhook CPU/req: the webhook process's user+system time over the run / requests;")
	_, _ = fmt.Fprintln(h.out, "loadgen CPU/req: the same for this process (vegeta, its TLS client, the in-process mirror);")
	_, _ = fmt.Fprintln(h.out, "peak RSS: the webhook's VmHWM when its scenario ended (a fresh process per scenario).")
	if memory, ok := rows["memory"]; ok {
		_, _ = fmt.Fprintf(h.out, "memory after the %d-tag run: VmRSS %s, VmHWM %s\n", h.o.cached, mib(memory.rss), mib(memory.peak))
	}
	for _, n := range h.notes {
		_, _ = fmt.Fprintln(h.out, n)
	}
	_, _ = fmt.Fprintf(h.out, "load average now: %s\n\n", loadAverage())
	t := tabwriter.NewWriter(h.out, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(t, "target\tmeasured\twanted\t")
	target := func(name, got, want string, ok bool) {
		verdict := "met"
		if !ok {
			verdict = "NOT MET"
		}
		_, _ = fmt.Fprintf(t, "%s\t%s\t%s\t%s\n", name, got, want, verdict)
	}
	floor, hasFloor := rows["floor"]
	if warm, ok := rows["warm"]; ok && hasFloor {
		thr := warm.st.throughput() / floor.st.throughput()
		p99 := float64(warm.st.quantile(.99)) / float64(floor.st.quantile(.99))
		target("(a) warm req/s vs floor", fmt.Sprintf("%.2fx (%.0f vs %.0f)", thr, warm.st.throughput(), floor.st.throughput()), ">= 0.80x", thr >= 0.8)
		target("(a) warm p99 vs floor", fmt.Sprintf("%.2fx (%s vs %s)", p99, ms(warm.st.quantile(.99)), ms(floor.st.quantile(.99))), "<= 2x", p99 <= 2)
		per := func(r row) float64 { return float64(r.cpu) / float64(max(1, r.st.requests)) }
		if warm.cpu > 0 && floor.cpu > 0 {
			_, _ = fmt.Fprintf(t, "(a) warm webhook CPU/req vs floor\t%.2fx (%s vs %s)\t(for information)\t\n", per(warm)/per(floor),
				perRequest(warm.cpu, warm.st.requests), perRequest(floor.cpu, floor.st.requests))
		}
		// The floor decodes with encoding/json, as a trivial webhook would; pullgate's decoder is
		// faster, so this one says what pullgate costs beyond decoding the same way.
		if fk, ok := rows["floor-kjson"]; ok && fk.cpu > 0 && warm.cpu > 0 {
			_, _ = fmt.Fprintf(t, "(a) warm req/s vs floor with kjson\t%.2fx (%.0f vs %.0f)\t(for information)\t\n", warm.st.throughput()/fk.st.throughput(), warm.st.throughput(), fk.st.throughput())
			_, _ = fmt.Fprintf(t, "(a) warm webhook CPU/req vs floor with kjson\t%.2fx (%s vs %s)\t(for information)\t\n", per(warm)/per(fk),
				perRequest(warm.cpu, warm.st.requests), perRequest(fk.cpu, fk.st.requests))
		}
	}
	if burst, ok := rows["burst"]; ok {
		target("(c) registry requests per burst", burst.registry, "1", burst.broken == "")
	}
	if slow, ok := rows["slow"]; ok {
		target(fmt.Sprintf("(d) p50, %d new images, registry +%s", h.o.slowImages, h.o.delay), ms(slow.st.quantile(.5)), "< 100ms", slow.st.quantile(.5) < 100*time.Millisecond)
	}
	if memory, ok := rows["memory"]; ok {
		target(fmt.Sprintf("RSS with %d cached digests", h.o.cached), "VmHWM "+mib(memory.peak), "< 64 MiB", memory.peak < 64<<20)
	}
	if err := t.Flush(); err != nil {
		return err
	}
	if len(problems) > 0 {
		_, _ = fmt.Fprintln(h.out)
		for _, p := range problems {
			_, _ = fmt.Fprintln(h.out, "FAILED "+p)
		}
		return fmt.Errorf("%d scenario(s) failed", len(problems))
	}
	return nil
}

// perRequest is the webhook's CPU time per request, in microseconds.
func perRequest(cpu time.Duration, n int) string {
	if cpu <= 0 || n == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0fµs", float64(cpu)/float64(time.Microsecond)/float64(n))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

func mib(b int64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}
