package resolve

import (
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// pickChallenge returns the first basic or bearer challenge among WWW-Authenticate values, else
// the first challenge, else an empty one (credentials sent as basic), as go-containerregistry's
// ping does. Insecure lets the challenge name a plain-HTTP token realm.
func pickChallenge(values []string, insecure bool) *transport.Challenge {
	var first *transport.Challenge
	for _, v := range values {
		scheme, params := parseChallenge(v)
		if scheme == "" {
			continue
		}
		c := &transport.Challenge{Scheme: scheme, Parameters: params, Insecure: insecure}
		if scheme == "basic" || scheme == "bearer" {
			return c
		}
		if first == nil {
			first = c
		}
	}
	if first != nil {
		return first
	}
	return &transport.Challenge{Insecure: insecure}
}

// parseChallenge reads one WWW-Authenticate value, `Bearer realm="https://auth.example/token",
// service="registry",scope="repository:app:pull"`: the scheme (lower case) and its parameters
// (keys lower case, values unquoted). It stops at the first thing that is not a parameter.
func parseChallenge(v string) (string, map[string]string) {
	scheme, rest := httpToken(strings.TrimLeft(v, " \t"))
	if scheme == "" {
		return "", nil
	}
	params := map[string]string{}
	for {
		var key, value string
		key, rest = httpToken(strings.TrimLeft(rest, " \t,"))
		rest = strings.TrimLeft(rest, " \t")
		if key == "" || !strings.HasPrefix(rest, "=") {
			break
		}
		var ok bool
		if value, rest, ok = tokenOrQuoted(strings.TrimLeft(rest[1:], " \t")); !ok {
			break
		}
		params[strings.ToLower(key)] = value
	}
	return strings.ToLower(scheme), params
}

// httpToken splits a leading RFC 9110 token off s.
func httpToken(s string) (string, string) {
	i := 0
	for i < len(s) && isTokenChar(s[i]) {
		i++
	}
	return s[:i], s[i:]
}

func isTokenChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// tokenOrQuoted splits a leading token or quoted string (with backslash escapes) off s.
func tokenOrQuoted(s string) (value, rest string, ok bool) {
	if !strings.HasPrefix(s, `"`) {
		value, rest = httpToken(s)
		return value, rest, value != ""
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			return b.String(), s[i+1:], true
		case c == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
		default:
			b.WriteByte(c)
		}
	}
	return "", "", false // unterminated
}
