// Package credsync keeps copies of mirror credential Secrets in the namespaces that opted in to
// pullgate (policy syncCredentials), so the pull secret pullgate injects exists where pods run:
// a pure planner (Plan) and a leader-only loop (Syncer) that reads, plans and applies.
package credsync
