package mutate

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/pullgate/pullgate/pkg/policy"
)

// maxRefLength bounds what we parse: the distribution spec caps names at 255 characters and
// anything far beyond that is hostile input, not an image.
const maxRefLength = 1024

// imageRef is a parsed image reference that remembers what its author wrote: whether the tag was
// explicit, and the text before tag and digest, so an unchanged part is never reformatted.
type imageRef struct {
	registry   string // canonical: docker.io for Docker Hub and its aliases
	host       string // host as go-containerregistry resolves it (index.docker.io for Docker Hub)
	repository string // library/nginx
	base       string // as written, without tag and digest: nginx, ghcr.io/a/b
	tag        string // explicit tag, or "" when none was written
	digest     string // sha256:..., or ""
}

// parseImage parses an image field with go-containerregistry's rules: nginx is
// docker.io/library/nginx:latest, a port is never a tag, tag and digest may both be present.
func parseImage(s string) (imageRef, error) {
	if s == "" {
		return imageRef{}, fmt.Errorf("empty image")
	}
	if len(s) > maxRefLength {
		return imageRef{}, fmt.Errorf("reference is %d characters, longer than %d", len(s), maxRefLength)
	}
	ref, err := name.ParseReference(s)
	if err != nil {
		return imageRef{}, err
	}
	r := imageRef{
		host:       ref.Context().RegistryStr(),
		repository: ref.Context().RepositoryStr(),
		base:       s,
	}
	r.registry = policy.CanonicalRegistry(r.host)
	if d, ok := ref.(name.Digest); ok {
		r.digest = d.DigestStr()
		r.base = s[:strings.LastIndex(s, "@")]
	}
	// Tags cannot contain '/', so a ':' after the last '/' is a tag, never a registry port.
	lastSlash := strings.LastIndex(r.base, "/")
	if i := strings.LastIndex(r.base, ":"); i > lastSlash {
		r.tag = r.base[i+1:]
		r.base = r.base[:i]
	}
	return r, nil
}

// normalized is the form exclusion globs match: docker.io/library/nginx:1.27[@sha256:...].
func (r imageRef) normalized() string {
	s := r.registry + "/" + r.repository
	if r.tag != "" || r.digest == "" {
		s += ":" + r.tagOrLatest()
	}
	if r.digest != "" {
		s += "@" + r.digest
	}
	return s
}

func (r imageRef) tagOrLatest() string {
	if r.tag == "" {
		return name.DefaultTag
	}
	return r.tag
}

// format writes the reference on a base (its own, or a mirror repository), keeping tag and digest. When
// pinning, a missing tag is written out as latest, so humans still see what was asked for.
func (r imageRef) format(base, digest string) string {
	s := base
	switch {
	case r.tag != "":
		s += ":" + r.tag
	case digest != "" && r.digest == "":
		s += ":" + name.DefaultTag
	}
	if digest != "" {
		s += "@" + digest
	}
	return s
}
