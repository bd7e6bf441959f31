package warm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/policy"
)

// work warms one item and files the outcome.
func (q *Queue) work(ctx context.Context, it *item, s policy.WarmSettings) {
	log := logr.FromContextOrDiscard(ctx).WithValues("image", it.image, "registry", it.host)
	start := time.Now()
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var last atomic.Int64
	last.Store(start.UnixNano())
	go watchdog(wctx, cancel, &last, s.StallTimeout)
	var reserved int64
	var deadline *time.Timer
	defer func() {
		if deadline != nil {
			deadline.Stop()
		}
	}()
	check := s.Mode == policy.WarmCheck
	req := contract.WarmRequest{
		Ref: it.ref, CheckOnly: check,
		Start: func(total int64, _ int) error {
			if !check {
				if err := q.reserve(it.host, total, s); err != nil {
					return err
				}
				reserved = total
			}
			deadline = time.AfterFunc(s.Deadline(total), func() { cancel(errDeadline) })
			return nil
		},
		Progress: func(int64) { last.Store(time.Now().UnixNano()) },
	}
	if q.Platforms != nil {
		req.Platforms = q.Platforms()
	}
	log.V(1).Info("warming", "platforms", fmt.Sprint(req.Platforms), "checkOnly", check)
	res, err := q.Warmer.Warm(wctx, req)
	took := time.Since(start)

	outcome, retry, after := outcomeWarmed, false, time.Duration(0)
	if check {
		outcome = outcomeChecked
	}
	var f *contract.WarmFailure
	var b *budgetError
	cause := context.Cause(wctx)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		// The controller is stopping (or lost the lead): the next leader starts over.
		q.finish(it, false, 0)
		warmActive.WithLabelValues(it.host).Dec()
		return
	case errors.Is(cause, errStalled):
		outcome, retry = outcomeStalled, true
		err = fmt.Errorf("no byte read for %s: %w", s.StallTimeout, err)
	case errors.Is(cause, errDeadline):
		outcome, retry = outcomeDeadline, true
		err = fmt.Errorf("not done within %s (%s at %s/s): %w", s.Deadline(reserved), s.Timeout, size(s.MinRate), err)
	case errors.As(err, &b):
		outcome, retry, after = outcomeOverBudget, b.wait > 0, b.wait
	case errors.As(err, &f):
		outcome, retry, after = f.Outcome, f.Retry, f.RetryAfter
	default:
		outcome = contract.WarmError
	}
	if err != nil && reserved > res.Bytes {
		q.refund(it.host, reserved-res.Bytes)
	}
	warmBytes.WithLabelValues(it.host).Add(float64(res.Bytes))
	warmBlobs.WithLabelValues(it.host).Add(float64(res.Blobs))
	warmDuration.WithLabelValues(it.host, outcome).Observe(took.Seconds())
	warmActive.WithLabelValues(it.host).Dec()

	switch {
	case err == nil && check:
		log.Info("mirror holds the image", "took", took.String(), "blobs", res.Blobs)
		q.event(it, corev1.EventTypeNormal, "MirrorChecked", actionWarm, "mirror holds every blob of %s (%d blobs, %s), checked in %s", it.image, res.Blobs, size(res.Bytes), round(took))
		q.finish(it, false, 0)
	case err == nil:
		log.Info("mirror warmed", "took", took.String(), "bytes", res.Bytes, "blobs", res.Blobs)
		q.event(it, corev1.EventTypeNormal, "MirrorWarmed", actionWarm, "mirror warmed %s in %s (%s, %d blobs)", it.image, round(took), size(res.Bytes), res.Blobs)
		q.finish(it, false, 0)
	default:
		wait, again, try := q.finish(it, retry, after)
		log.Info("mirror warm failed", "outcome", outcome, "retry", again, "in", wait.String(), "error", err.Error())
		msg := fmt.Sprintf("mirror not warmed with %s (%s): %s", it.image, outcome, err)
		if outcome == contract.WarmMissing {
			msg = fmt.Sprintf("mirror does not hold %s: %d of its blobs are missing (%s)", it.image, len(res.Missing), err)
		}
		if again {
			msg += fmt.Sprintf("; trying again in %s (attempt %d of %d)", round(wait), try+1, or(q.Attempts, DefaultAttempts))
		}
		// An action per try: the API keeps one Event, with the first note, for a series of
		// Events alike in type, reason and action, and the last try's outcome must be read.
		q.event(it, corev1.EventTypeWarning, "MirrorWarmFailed", fmt.Sprintf("%sTry%d", actionWarm, try), "%s", msg)
	}
}

// finish files an item's outcome: queued again after a backoff when retry allows and attempts
// remain, done otherwise. It returns the wait, whether it was queued again and which try ended.
func (q *Queue) finish(it *item, retry bool, after time.Duration) (time.Duration, bool, int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	l := q.lane(it.host)
	l.running--
	defer q.poke()
	it.attempts++
	if !retry || it.attempts >= or(q.Attempts, DefaultAttempts) {
		it.state = done
		return 0, false, it.attempts
	}
	wait := min(or(q.Backoff, DefaultBackoff)<<(it.attempts-1), maxBackoff)
	wait = max(wait, after)
	it.state, it.due = queued, time.Now().Add(wait)
	l.pending = append(l.pending, it)
	warmQueued.WithLabelValues(it.host).Inc()
	return wait, true, it.attempts
}

// watchdog cancels ctx with errStalled when last (unix nanoseconds of the last read) is older
// than stall.
func watchdog(ctx context.Context, cancel context.CancelCauseFunc, last *atomic.Int64, stall time.Duration) {
	t := time.NewTicker(max(stall/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if now.Sub(time.Unix(0, last.Load())) > stall {
				cancel(errStalled)
				return
			}
		}
	}
}

// budgetError: the image does not fit the mirror's hourly byte budget now (wait > 0), or ever.
type budgetError struct {
	size, budget int64
	wait         time.Duration
}

func (b *budgetError) Error() string {
	if b.wait == 0 {
		return fmt.Sprintf("the image (%s) is larger than the mirror's warm budget of %s per hour", size(b.size), size(b.budget))
	}
	return fmt.Sprintf("the image (%s) does not fit what is left of the mirror's warm budget of %s this hour", size(b.size), size(b.budget))
}

// reserve takes n bytes from the host's budget for the current hour.
func (q *Queue) reserve(host string, n int64, s policy.WarmSettings) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	l := q.lane(host)
	now := time.Now()
	if now.Sub(l.window) >= time.Hour {
		l.window, l.spent = now, 0
	}
	if n > s.BudgetPerHour {
		return &budgetError{size: n, budget: s.BudgetPerHour}
	}
	if l.spent+n > s.BudgetPerHour {
		return &budgetError{size: n, budget: s.BudgetPerHour, wait: l.window.Add(time.Hour).Sub(now)}
	}
	l.spent += n
	return nil
}

func (q *Queue) refund(host string, n int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	l := q.lane(host)
	l.spent = max(0, l.spent-n)
}

// actionWarm is the Events' action.
const actionWarm = "Warm"

// event records on the first pod that asked for the item.
func (q *Queue) event(it *item, typ, reason, action, format string, args ...any) {
	if q.Events == nil {
		return
	}
	q.mu.Lock()
	pods := slices.Clone(it.pods)
	q.mu.Unlock()
	if len(pods) == 0 {
		return
	}
	p := pods[0]
	note := fmt.Sprintf(format, args...)
	if len(note) > maxNote {
		note = note[:maxNote] + "..."
	}
	ref := &corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID}
	q.Events.Eventf(ref, nil, typ, reason, action, "%s", note)
}

func or[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// size formats bytes as people read them: "1.0 GiB".
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func round(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}
