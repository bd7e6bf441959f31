// Package image tests `make image` (hack/image.sh and hack/image): the OCI image it assembles
// without Docker, pushed to an in-process registry on 127.0.0.1 and inspected there.
package image
