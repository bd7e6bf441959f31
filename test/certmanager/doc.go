// Package certmanager runs cert-manager's real issuing machinery in the test process, against
// any API server: the controllers that turn Issuers and Certificates into Secrets (self-signed and
// CA issuers, the certificates pipeline, the approver) and the cainjector that copies a
// Certificate's CA into webhook configurations. It replaces a cert-manager installation for the
// end-to-end tests of the Helm chart, which has no cluster nodes to run cert-manager's pods on.
package certmanager
