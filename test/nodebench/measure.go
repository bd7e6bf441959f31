package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/pullgate/pullgate/test/e2e"
)

type bed struct {
	env *e2e.Env
	o   options
}

// row is one pod start.
type row struct {
	name string
	// start is pod create -> Running, seen by a watch.
	start time.Duration
	// pulled is the kubelet's own "Successfully pulled ... in X" figure, or its "already
	// present" note.
	pulled string
	// upstream is what the remote registry sent (to the node or the mirror); mirror is what the
	// mirror sent to the node.
	upstream, mirror int64
	// mirrorFetches is the most times the mirror fetched any one blob from the upstream
	// during this pod's start.
	mirrorFetches int
}

const (
	bigRepo  = "bench/big:v1"
	tinyRepo = "bench/tiny:v1"
)

func (b *bed) measure(ctx context.Context) ([]row, error) {
	env, regs := b.env, b.env.Node.Registries
	// A realistic shape: one large layer and a few smaller ones over a small base.
	layers := []int64{b.o.size * 70 / 100, b.o.size * 15 / 100, b.o.size * 10 / 100}
	layers = append(layers, b.o.size-layers[0]-layers[1]-layers[2])
	fmt.Fprintf(os.Stderr, "nodebench: building a %s image (%d layers) and pushing it to the upstream\n", human(b.o.size), len(layers)+1)
	big, err := e2e.BuildImage(e2e.ImageSpec{Busybox: env.Opts.Busybox, RandomLayers: layers, Seed: 1, LayerDir: b.o.layerDir, Cmd: []string{"sh"}})
	if err != nil {
		return nil, err
	}
	if _, err := regs.Push(ctx, bigRepo, e2e.Index(big)); err != nil {
		return nil, err
	}
	tiny, err := e2e.BuildImage(e2e.ImageSpec{Busybox: env.Opts.Busybox, Cmd: []string{"sh"}})
	if err != nil {
		return nil, err
	}
	if _, err := regs.Push(ctx, tinyRepo, e2e.Index(tiny)); err != nil {
		return nil, err
	}
	plain, err := env.NodeNamespace(ctx, "bench-direct", "", nil, false)
	if err != nil {
		return nil, err
	}
	enforced, err := env.NodeNamespace(ctx, "bench-pullgate", "enforce", nil, true)
	if err != nil {
		return nil, err
	}

	var rows []row
	step := func(name, ns, repo string, removeFirst bool) error {
		if removeFirst {
			if err := env.Node.RemoveImages(ctx, strings.Split(repo, ":")[0]); err != nil {
				return err
			}
		}
		fmt.Fprintf(os.Stderr, "nodebench: %s\n", name)
		r, err := b.podStart(ctx, name, ns, regs.RemoteRef(repo))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		rows = append(rows, r)
		return nil
	}
	steps := []struct {
		name, ns, repo string
		remove         bool
	}{
		{"tiny image, pulled through pullgate + mirror", enforced, tinyRepo, false},
		{"tiny image, already on the node", enforced, tinyRepo, false},
		{"(a) straight from the remote registry", plain, bigRepo, false},
		{"(b) pullgate + mirror, mirror cold", enforced, bigRepo, true},
	}
	for i := 1; i <= b.o.pods; i++ {
		steps = append(steps, struct {
			name, ns, repo string
			remove         bool
		}{fmt.Sprintf("(c) pullgate + mirror, mirror warm, pod %d", i), enforced, bigRepo, true})
	}
	steps = append(steps, struct {
		name, ns, repo string
		remove         bool
	}{"(d) already on the node", enforced, bigRepo, false})
	for _, s := range steps {
		if err := step(s.name, s.ns, s.repo, s.remove); err != nil {
			return nil, err
		}
	}
	if err := b.prepull(ctx, layers); err != nil {
		return nil, err
	}
	if err := step("(e) pre-pulled by pullgate", enforced, prepullRepo, false); err != nil {
		return nil, err
	}
	fRows, err := b.warmRows(ctx, enforced, layers)
	if err != nil {
		return nil, err
	}
	rows = append(rows, fRows...)
	return rows, nil
}

var pulledIn = regexp.MustCompile(`Successfully pulled image "[^"]*" in ([^ ]+)`)

// podStart creates a pod, times create -> Running with a watch, and deletes it again.
func (b *bed) podStart(ctx context.Context, name, ns, image string) (row, error) {
	env := b.env
	r := row{name: name}
	before, err := b.traffic()
	if err != nil {
		return r, err
	}
	pod := e2e.BusyboxPod("", "sleep 3600", image)
	pod.GenerateName = "bench-"
	pods := env.Client.CoreV1().Pods(ns)
	began := time.Now()
	created, err := pods.Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return r, err
	}
	w, err := pods.Watch(ctx, metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("metadata.name", created.Name).String(),
		ResourceVersion: created.ResourceVersion,
	})
	if err != nil {
		return r, err
	}
	timeout := time.After(30 * time.Minute)
	for started := false; !started; {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				return r, errors.New("watch closed")
			}
			p, isPod := ev.Object.(*corev1.Pod)
			if ev.Type == watch.Error || !isPod {
				return r, fmt.Errorf("watch: %v", ev.Object)
			}
			if e2e.PodStarted(p) {
				r.start, started = time.Since(began), true
			}
		case <-timeout:
			w.Stop()
			return r, fmt.Errorf("pod %s not running after 30 minutes", created.Name)
		case <-ctx.Done():
			w.Stop()
			return r, ctx.Err()
		}
	}
	w.Stop()
	for _, m := range env.EventMessages(ctx, ns, created.Name, "Pulled") {
		if s := pulledIn.FindStringSubmatch(m); s != nil {
			r.pulled = s[1]
		} else if strings.Contains(m, "already present") {
			r.pulled = "already present"
		}
	}
	if err := b.since(&r, before); err != nil {
		return r, err
	}
	// Not 0: a forced delete drops the object before the kubelet has stopped the container, and
	// the next row's image removal needs it stopped.
	grace := int64(1)
	if err := pods.Delete(ctx, created.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
		return r, err
	}
	return r, e2e.Poll(ctx, 2*time.Minute, func(ctx context.Context) (bool, error) {
		_, err := pods.Get(ctx, created.Name, metav1.GetOptions{})
		return err != nil, nil
	})
}

// traffic is what the upstream and the mirror have sent so far.
type traffic struct {
	upstream, mirror int64
	fetched          map[string]int
}

func (b *bed) traffic() (traffic, error) {
	regs := b.env.Node.Registries
	mirror, err := b.mirrorBytes()
	return traffic{
		upstream: regs.RemoteLink.BytesDown() + regs.MirrorLink.BytesDown(),
		mirror:   mirror,
		fetched:  regs.MirrorRequests.Snapshot().Blobs,
	}, err
}

// since fills r's traffic columns with what was sent after before.
func (b *bed) since(r *row, before traffic) error {
	now, err := b.traffic()
	if err != nil {
		return err
	}
	r.upstream, r.mirror = now.upstream-before.upstream, now.mirror-before.mirror
	for blob, n := range now.fetched {
		r.mirrorFetches = max(r.mirrorFetches, n-before.fetched[blob])
	}
	return nil
}

// mirrorBytes is what the mirror has sent in answers to GETs of the bench images so far.
func (b *bed) mirrorBytes() (int64, error) {
	lines, err := b.env.Node.Registries.MirrorAccessLog("/v2/bench/")
	if err != nil {
		return 0, err
	}
	var n int64
	for _, l := range lines {
		if l.Method == http.MethodGet {
			n += l.Bytes
		}
	}
	return n, nil
}

func (b *bed) print(rows []row) error {
	var out io.Writer = os.Stdout
	if b.o.resultOut != "" {
		f, err := os.Create(b.o.resultOut)
		if err != nil {
			return err
		}
		defer f.Close()
		out = io.MultiWriter(os.Stdout, f)
	}
	fmt.Fprintf(out, "\nnode-bench: %s image (5 layers), remote registry at %g Mbit/s and %s RTT, one node (kubelet 1.37, containerd 1.6)\n\n",
		human(b.o.size), b.o.mbits, b.o.rtt)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "pod\tcreate->Running\tkubelet pull\tupstream sent\tmirror sent\tmirror fetches/blob\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%.2fs\t%s\t%s\t%s\t%d\t\n", r.name, r.start.Seconds(), r.pulled, human(r.upstream), human(r.mirror), r.mirrorFetches)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	find := func(prefix string) []row {
		var rs []row
		for _, r := range rows {
			if strings.HasPrefix(r.name, prefix) {
				rs = append(rs, r)
			}
		}
		return rs
	}
	a, cold, c, d, e, tinyOn := find("(a)")[0], find("(b)")[0], find("(c)"), find("(d)")[0], find("(e)")[0], find("tiny image, already")[0]
	starts := make([]float64, len(c))
	for i, r := range c {
		starts[i] = r.start.Seconds()
	}
	slices.Sort(starts)
	cMedian := starts[len(starts)/2]
	cFetches := 0
	for _, r := range c {
		cFetches = max(cFetches, r.mirrorFetches)
	}
	judge := func(ok bool) string {
		switch {
		case b.o.smoke:
			return "(smoke run: not judged)"
		case ok:
			return "met"
		}
		return "NOT MET"
	}
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target\tmeasured\twanted\t")
	fmt.Fprintf(tw, "(c) faster than (a)\t%.1fx (%.2fs median of %d vs %.2fs)\t>= 8x\t%s\n", a.start.Seconds()/cMedian, cMedian, len(c), a.start.Seconds(), judge(a.start.Seconds()/cMedian >= 8))
	fmt.Fprintf(tw, "(d) vs tiny image on the node\t%.2fx (%.2fs vs %.2fs)\t<= 1.3x\t%s\n", d.start.Seconds()/tinyOn.start.Seconds(), d.start.Seconds(), tinyOn.start.Seconds(), judge(d.start.Seconds() <= 1.3*tinyOn.start.Seconds()))
	fmt.Fprintf(tw, "(e) pre-pulled vs tiny image on the node\t%.2fx (%.2fs vs %.2fs)\t<= 1.3x\t%s\n", e.start.Seconds()/tinyOn.start.Seconds(), e.start.Seconds(), tinyOn.start.Seconds(), judge(e.start.Seconds() <= 1.3*tinyOn.start.Seconds() && e.pulled == "already present"))
	fmt.Fprintf(tw, "(b) upstream fetches of a blob, cold mirror\t%d\t<= 1\t%s\n", cold.mirrorFetches, judge(cold.mirrorFetches <= 1))
	fmt.Fprintf(tw, "(c) upstream fetches of a blob, %d warm pods\t%d\t0\t%s\n", len(c), cFetches, judge(cFetches == 0))
	warmTarget(tw, rows, judge)
	return tw.Flush()
}

func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(n, 64)
			if err != nil || v <= 0 {
				return 0, fmt.Errorf("%q is not a positive size", s)
			}
			return int64(v * float64(u.mult)), nil
		}
	}
	return 0, fmt.Errorf("%q: give a unit (KiB, MiB or GiB)", s)
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
