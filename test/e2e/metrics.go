package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Sample is one line of the Prometheus text format: a series and its value.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Metrics is one scrape of a webhook's /metrics.
type Metrics []Sample

// Labels selects series: every pair must be present with that value; other labels may be too.
type Labels map[string]string

// Sum adds the values of the series called name whose labels include match. For a histogram ask
// for name_count or name_sum. A series that does not exist yet counts as 0, as a counter that has
// not moved.
func (m Metrics) Sum(name string, match Labels) float64 {
	var sum float64
	for _, s := range m {
		if s.Name == name && s.matches(match) {
			sum += s.Value
		}
	}
	return sum
}

func (s Sample) matches(match Labels) bool {
	for k, v := range match {
		if got, ok := s.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Metrics scrapes the webhook's /metrics.
func (w *Webhook) Metrics(ctx context.Context) (Metrics, error) {
	return scrape(ctx, "http://"+w.MetricsAddr+"/metrics")
}

// ControllerMetrics scrapes /metrics of every running controller pod of the release (from the
// node's network, which reaches pod IPs) and returns their samples together: Sum then adds the
// replicas, of which only the leader warms and reconciles.
func (r *Release) ControllerMetrics(ctx context.Context) (Metrics, error) {
	pods, err := r.env.Client.CoreV1().Pods(r.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=pullgate-controller,app.kubernetes.io/instance=" + r.Name,
	})
	if err != nil {
		return nil, err
	}
	var all Metrics
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" || p.DeletionTimestamp != nil {
			continue
		}
		m, err := scrape(ctx, "http://"+net.JoinHostPort(p.Status.PodIP, controllerMetricsPort)+"/metrics")
		if err != nil {
			return nil, fmt.Errorf("controller pod %s: %w", p.Name, err)
		}
		all = append(all, m...)
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("no running controller pod of release %s in %s", r.Name, r.Namespace)
	}
	return all, nil
}

// controllerMetricsPort is the chart's ports.metrics, which the suite leaves at its default.
const controllerMetricsPort = "8080"

func scrape(ctx context.Context, url string) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	// Plain text: the parser below does not read the protobuf or OpenMetrics formats.
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	m, err := ParseMetrics(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return m, nil
}

// ParseMetrics reads the Prometheus text exposition format (version 0.0.4). It keeps what the
// suite needs, names, labels and values, and skips comments, HELP and TYPE lines.
func ParseMetrics(r io.Reader) (Metrics, error) {
	var out Metrics
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d %q: %w", n, line, err)
		}
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read metrics: %w", err)
	}
	return out, nil
}

// parseSample parses `name{k="v",...} value [timestamp]`. Label values may hold escaped \\, \"
// and \n, and any other character, commas and braces included.
func parseSample(line string) (Sample, error) {
	s := Sample{Labels: map[string]string{}}
	i := strings.IndexAny(line, "{ \t")
	if i <= 0 {
		return s, fmt.Errorf("no value")
	}
	s.Name, line = line[:i], line[i:]
	if line[0] == '{' {
		line = line[1:]
		for {
			line = strings.TrimLeft(line, " \t,")
			if line == "" {
				return s, fmt.Errorf("unterminated label set")
			}
			if line[0] == '}' {
				line = line[1:]
				break
			}
			eq := strings.IndexByte(line, '=')
			if eq <= 0 || len(line) < eq+2 || line[eq+1] != '"' {
				return s, fmt.Errorf("malformed label")
			}
			key := strings.TrimSpace(line[:eq])
			var val strings.Builder
			j := eq + 2
			for ; j < len(line) && line[j] != '"'; j++ {
				if line[j] == '\\' && j+1 < len(line) {
					j++
					switch line[j] {
					case 'n':
						val.WriteByte('\n')
					default:
						val.WriteByte(line[j])
					}
					continue
				}
				val.WriteByte(line[j])
			}
			if j >= len(line) {
				return s, fmt.Errorf("unterminated value of label %s", key)
			}
			s.Labels[key] = val.String()
			line = line[j+1:]
		}
	}
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return s, fmt.Errorf("no value")
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return s, fmt.Errorf("value: %w", err)
	}
	s.Value = v
	return s, nil
}
