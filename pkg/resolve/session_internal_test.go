package resolve

import (
	"maps"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"
)

func TestParseChallenge(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in         string
		wantScheme string
		want       map[string]string
	}{
		{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io"`, "bearer",
			map[string]string{"realm": "https://auth.docker.io/token", "service": "registry.docker.io"}},
		{`Bearer realm="https://r.example/token",service="r",scope="repository:a/b:pull,push"`, "bearer",
			map[string]string{"realm": "https://r.example/token", "service": "r", "scope": "repository:a/b:pull,push"}},
		{`BASIC Realm="Registry \"Realm\""`, "basic", map[string]string{"realm": `Registry "Realm"`}},
		{`Bearer realm = "https://r.example/token" , service=r`, "bearer", map[string]string{"realm": "https://r.example/token", "service": "r"}},
		{`Negotiate`, "negotiate", map[string]string{}},
		{`Bearer realm="unterminated`, "bearer", map[string]string{}},
		{`Bearer realm="https://r.example/token", broken, service="r"`, "bearer", map[string]string{"realm": "https://r.example/token"}},
		{``, "", nil},
		{`"quoted"`, "", nil},
	}
	for _, tt := range tests {
		scheme, params := parseChallenge(tt.in)
		if scheme != tt.wantScheme || !maps.Equal(params, tt.want) {
			t.Errorf("parseChallenge(%q) = %q, %v; want %q, %v", tt.in, scheme, params, tt.wantScheme, tt.want)
		}
	}
}

// The first basic or bearer challenge wins, else the first one; an insecure registry's challenge
// may name a plain-HTTP realm.
func TestPickChallenge(t *testing.T) {
	t.Parallel()
	c := pickChallenge([]string{`Negotiate`, `Bearer realm="http://r/token"`, `Basic realm="x"`}, true)
	if c.Scheme != "bearer" || c.Parameters["realm"] != "http://r/token" || !c.Insecure {
		t.Errorf("pickChallenge = %+v, want the insecure bearer challenge", c)
	}
	if c := pickChallenge([]string{`Negotiate`}, false); c.Scheme != "negotiate" || c.Insecure {
		t.Errorf("pickChallenge = %+v, want negotiate", c)
	}
	if c := pickChallenge(nil, false); c.Scheme != "" {
		t.Errorf("pickChallenge(none) = %+v, want an empty challenge", c)
	}
}

// httpsOnly upgrades plain-HTTP requests for its registry's host, leaves every other request as
// it is, and never changes the request it is given.
func TestHTTPSOnly(t *testing.T) {
	t.Parallel()
	var sent []string
	h := &httpsOnly{host: "127.0.0.1:5000", inner: roundTripFunc(func(req *http.Request) (*http.Response, error) {
		sent = append(sent, req.URL.String())
		return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: req}, nil
	})}
	for _, u := range []string{
		"http://127.0.0.1:5000/v2/app/manifests/v1",
		"https://127.0.0.1:5000/v2/",
		"http://127.0.0.1:5001/v2/",
		"http://auth.example/token",
	} {
		req, err := http.NewRequest(http.MethodHead, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := h.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if req.URL.String() != u {
			t.Errorf("the caller's request changed to %s", req.URL)
		}
	}
	want := []string{
		"https://127.0.0.1:5000/v2/app/manifests/v1",
		"https://127.0.0.1:5000/v2/",
		"http://127.0.0.1:5001/v2/",
		"http://auth.example/token",
	}
	if !slices.Equal(sent, want) {
		t.Errorf("sent %q, want %q", sent, want)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// The session cache is bounded, its entries expire, and drop removes only the entry it was
// given.
func TestTTLLRU(t *testing.T) {
	t.Parallel()
	now := time.Unix(0, 0)
	c := newTTLLRU[*int](3)
	c.now = func() time.Time { return now }
	vals := make([]*int, 5)
	for i := range vals {
		vals[i] = new(int)
		c.put(strconv.Itoa(i), vals[i], time.Minute)
	}
	if n := c.len(); n != 3 {
		t.Errorf("%d entries, want the cap of 3", n)
	}
	if _, ok := c.get("0"); ok {
		t.Error("the oldest entry survived the cap")
	}
	if v, ok := c.get("4"); !ok || v != vals[4] {
		t.Error("the newest entry is missing")
	}

	c.drop("4", vals[3]) // someone else's entry: kept
	if _, ok := c.get("4"); !ok {
		t.Error("drop removed an entry it was not given")
	}
	c.drop("4", vals[4])
	if _, ok := c.get("4"); ok {
		t.Error("drop kept the entry it was given")
	}

	now = now.Add(time.Minute)
	if _, ok := c.get("3"); ok {
		t.Error("an entry outlived its TTL")
	}
}
