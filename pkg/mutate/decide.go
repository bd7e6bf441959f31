package mutate

import (
	"fmt"
	"slices"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/pullgate/pullgate/pkg/policy"
)

// decision is what a policy says of an image text, wherever it appears: whether it moves, to
// where, and what to resolve. Nothing in it depends on the pod.
type decision struct {
	problem    string // why the image is left untouched, for a warning after its field
	excluded   bool
	ref        imageRef
	target     string
	mirror     string // host of the mirror the image ends up on, if it does
	rewritten  bool
	resolve    bool
	resolveTag name.Tag // the tag to resolve, on the mirror when there is one
	upstream   name.Tag
	// alternates and alternateTags are the further mirrors of the image's registry, in policy
	// order; alternateTags only when there is a tag to resolve.
	alternates    []alternate
	alternateTags []name.Tag
}

// alternate is an image's place on one of its registry's further mirrors.
type alternate struct {
	target string // repository text on that mirror
	mirror string // its host
}

// decideImage works out a decision: parsing the reference and forming the tags to resolve is
// most of what a warm admission costs after decoding, hence the memo (decisionMemo).
func decideImage(pol *policy.Compiled, image string) decision {
	ref, err := parseImage(image)
	if err != nil {
		return decision{problem: fmt.Sprintf("%q is not a valid image reference (%v); left untouched", clip(image), err)}
	}
	if pol.ExcludedImage(ref.normalized()) {
		return decision{excluded: true}
	}
	d := decision{ref: ref, target: ref.base}
	resolveAt := ref.host + "/" + ref.repository
	upstreamAt := resolveAt
	var opts []name.Option
	if m, on := pol.OnMirror(ref.host, ref.repository); on {
		d.mirror = m.Host
		opts = mirrorOptions(m)
		upstreamAt = m.UpstreamRepository(ref.repository)
	} else if m, ok := pol.MirrorFor(ref.registry); ok {
		d.target = m.Repository(ref.repository)
		d.mirror = m.Host
		d.rewritten = true
		resolveAt = d.target
		opts = mirrorOptions(m)
		// The mirror's path prefix lengthens the repository, which may then pass the 255
		// characters a repository may have: the rewritten image would not parse, and the kubelet
		// would refuse the pod. Checked here because pinned images and resolve.enabled: false
		// never build the tag below.
		if _, err := name.NewRepository(d.target, opts...); err != nil {
			return decision{problem: fmt.Sprintf("cannot form the mirror reference for %q (%v); left untouched", clip(image), err)}
		}
		d.alternates, d.alternateTags = alternates(pol.AlternateMirrors(ref.registry), ref, pol.ResolveEnabled())
	}
	if ref.digest != "" || !pol.ResolveEnabled() {
		return d
	}
	target, err := name.NewTag(resolveAt+":"+ref.tagOrLatest(), opts...)
	if err != nil {
		return decision{problem: fmt.Sprintf("cannot form the mirror reference for %q (%v); left untouched", clip(image), err)}
	}
	upstream, err := name.NewTag(upstreamAt + ":" + ref.tagOrLatest())
	if err != nil {
		upstream = target
	}
	d.resolve, d.resolveTag, d.upstream = true, target, upstream
	return d
}

// alternates places ref on each further mirror, with the tag to resolve there. A mirror on which
// the reference cannot be formed (its prefix makes the repository too long) is left out: the
// image never goes there.
func alternates(ms []policy.MirrorTarget, ref imageRef, resolve bool) ([]alternate, []name.Tag) {
	var alts []alternate
	var tags []name.Tag
	for _, m := range ms {
		a := alternate{target: m.Repository(ref.repository), mirror: m.Host}
		if _, err := name.NewRepository(a.target, mirrorOptions(m)...); err != nil {
			continue
		}
		if resolve && ref.digest == "" {
			t, err := name.NewTag(a.target+":"+ref.tagOrLatest(), mirrorOptions(m)...)
			if err != nil {
				continue
			}
			tags = append(tags, t)
		}
		alts = append(alts, a)
	}
	return alts, tags
}

func mirrorOptions(m policy.MirrorTarget) []name.Option {
	if m.Insecure {
		return []name.Option{name.Insecure}
	}
	return nil
}

// preferring puts the namespace's pick (pullgate.dev/mirror) first among the image's mirrors,
// the others keeping their policy order behind it. The decision is shared through the memo, so
// the reordered lists are copies, made only for pods of namespaces with a pick.
func (d decision) preferring(m policy.MirrorTarget) decision {
	if !d.rewritten {
		return d // on no mirror, or on the one its author wrote
	}
	want := m.Repository(d.ref.repository)
	i := slices.IndexFunc(d.alternates, func(a alternate) bool { return a.target == want })
	if i < 0 {
		return d // the first already, or a mirror this image cannot go to
	}
	alts := slices.Clone(d.alternates)
	picked := alts[i]
	alts = slices.Insert(slices.Delete(alts, i, i+1), 0, alternate{target: d.target, mirror: d.mirror})
	d.target, d.mirror, d.alternates = picked.target, picked.mirror, alts
	if d.resolve && len(d.alternateTags) == len(alts) {
		tags := slices.Clone(d.alternateTags)
		pickedTag := tags[i]
		d.alternateTags = slices.Insert(slices.Delete(tags, i, i+1), 0, d.resolveTag)
		d.resolveTag = pickedTag
	}
	return d
}
