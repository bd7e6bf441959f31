package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
)

// auditPolicy records pod requests at Metadata level: enough for the annotations admission
// webhooks add, without request bodies.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  resources:
  - group: ""
    resources: [pods, pods/ephemeralcontainers]
- level: None
`

// AuditEvent is the part of an audit.k8s.io/v1 Event the suite looks at. Declared here to keep
// k8s.io/apiserver out of the test module.
type AuditEvent struct {
	AuditID   string `json:"auditID"`
	Stage     string `json:"stage"`
	Verb      string `json:"verb"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	Annotations map[string]string `json:"annotations"`
}

// WaitForAuditEvent polls the audit log until an event at stage ResponseComplete matches, and
// returns it.
func (e *Env) WaitForAuditEvent(t testing.TB, match func(AuditEvent) bool) AuditEvent {
	t.Helper()
	var found AuditEvent
	err := Poll(t.Context(), WaitTimeout, func(context.Context) (bool, error) {
		f, err := os.Open(e.AuditLog)
		if err != nil {
			return false, nil // not written yet
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
		for sc.Scan() {
			var ev AuditEvent
			if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Stage != "ResponseComplete" {
				continue
			}
			if match(ev) {
				found = ev
				return true, nil
			}
		}
		if err := sc.Err(); err != nil {
			return false, fmt.Errorf("read %s: %w", e.AuditLog, err)
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no matching audit event in %s: %v", e.AuditLog, err)
	}
	return found
}
