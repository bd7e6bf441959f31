// Package admissionhttp serves AdmissionReviews over HTTP for a controller-runtime
// admission.Handler, as controller-runtime's own http.go does beside its Handler: it reads and
// decodes the review (the pod in the same pass), runs the handler with panic recovery, and
// writes the answer from recycled buffers.
//
// The webhook server (Webhook) and the offline mutate command (ReadBody, Decode, Run) share it,
// so both accept the same reviews, up to the same size, and answer them the same way.
package admissionhttp
