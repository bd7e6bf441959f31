// Package chart renders the Helm chart in deploy/helm/pullgate with the Helm SDK, the way
// `helm template` does, and decodes every object strictly into its Go type (k8s.io/api,
// cert-manager, prometheus-operator). Its tests hold the chart to the webhook's contract; the
// end-to-end suite uses Render to apply the same objects to a real API server.
package chart
