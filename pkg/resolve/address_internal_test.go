package resolve

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"testing"
	"time"
)

// Only public unicast addresses pass, however they are spelled; nothing here is dialled.
func TestAddressClass(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr, want string
	}{
		{"8.8.8.8", ""},
		{"1.1.1.1", ""},
		{"100.63.255.255", ""}, // just below CGNAT
		{"100.128.0.0", ""},    // just above it
		{"172.32.0.1", ""},     // just above 172.16/12
		{"2606:4700:4700::1111", ""},
		{"::ffff:8.8.8.8", ""},   // IPv4-mapped public
		{"64:ff9b::808:808", ""}, // NAT64 of 8.8.8.8
		{"127.0.0.1", "a loopback address"},
		{"127.255.255.254", "a loopback address"},
		{"::1", "a loopback address"},
		{"::ffff:127.0.0.1", "a loopback address"},
		{"10.0.0.5", "a private address"},
		{"172.16.0.1", "a private address"},
		{"172.31.255.255", "a private address"},
		{"192.168.1.1", "a private address"},
		{"::ffff:10.0.0.5", "a private address"},
		{"::ffff:192.168.0.1", "a private address"},
		{"64:ff9b::a00:5", "a private address"}, // NAT64 of 10.0.0.5
		{"169.254.169.254", "a link-local address"},
		{"::ffff:169.254.169.254", "a link-local address"},
		{"fe80::1", "a link-local address"},
		{"fe80::1%eth0", "a link-local address"},
		{"fc00::1", "a unique-local address"},
		{"fd00:ec2::254", "a unique-local address"}, // EC2's IPv6 metadata endpoint
		{"fec0::1", "a reserved address"},           // site-local, deprecated but routable
		{"0.0.0.0", "the unspecified address"},
		{"0.1.2.3", "a reserved address"},
		{"::", "the unspecified address"},
		{"::ffff:0.0.0.0", "the unspecified address"},
		{"224.0.0.1", "a multicast address"},
		{"239.255.255.250", "a multicast address"},
		{"ff02::1", "a multicast address"},
		{"ff05::1", "a multicast address"},
		{"100.64.0.1", "a carrier-grade NAT address"},
		{"100.127.255.255", "a carrier-grade NAT address"},
		{"::ffff:100.64.0.1", "a carrier-grade NAT address"},
		{"255.255.255.255", "a reserved address"},
		{"240.0.0.1", "a reserved address"},
		{"192.0.0.8", "a reserved address"},
		{"198.18.0.1", "a reserved address"},
		{"192.0.2.1", "a reserved address"},
		{"::127.0.0.1", "a reserved address"},    // IPv4-compatible, deprecated
		{"::ffff:0:a00:5", "a reserved address"}, // SIIT
		{"64:ff9b:1::a00:5", "a reserved address"},
		{"2002:a00:5::1", "a reserved address"}, // 6to4 of 10.0.0.5
		{"2001::1", "a reserved address"},       // Teredo
		{"2001:db8::1", "a reserved address"},
		{"100::1", "a reserved address"},
	}
	for _, tt := range tests {
		if got := addressClass(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("addressClass(%s) = %q, want %q", tt.addr, got, tt.want)
		}
		// Whatever these lists miss, nothing net.IP calls non-global passes.
		ip := net.ParseIP(netip.MustParseAddr(tt.addr).WithZone("").String())
		if tt.want == "" && (!ip.IsGlobalUnicast() || ip.IsPrivate()) {
			t.Errorf("%s passes, but net.IP does not call it global", tt.addr)
		}
	}
}

func TestHostKey(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"harbor.example.com", "harbor.example.com"},
		{"Harbor.Example.com:443", "harbor.example.com"},
		{"harbor.example.com:80", "harbor.example.com"},
		{"harbor.example.com:8443", "harbor.example.com:8443"},
		{"10.0.0.5:5000", "10.0.0.5:5000"},
		{"[::1]:443", "[::1]"},
		{"[::1]:5000", "[::1]:5000"},
		{"[fe80::443]", "[fe80::443]"},
		{"fe80::443", "fe80::443"}, // no brackets, no port
	}
	for _, tt := range tests {
		if got := hostKey(tt.in); got != tt.want {
			t.Errorf("hostKey(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// A guarded request that the environment would send through a proxy is refused before the
// proxy is contacted: the proxy, not pullgate, would choose the address.
func TestGuardedTransportRefusesProxy(t *testing.T) {
	t.Parallel()
	proxy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := proxy.Accept(); err == nil {
			accepted <- struct{}{}
			_ = c.Close()
		}
	}()
	proxyURL := &url.URL{Scheme: "http", Host: proxy.Addr().String()}
	ts := transports{check: publicOnly, proxy: func(*http.Request) (*url.URL, error) { return proxyURL, nil }}
	_, guarded, err := ts.get(nil, func(*http.Request, *http.Response, error) {})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://registry.example.com/v2/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := guarded.RoundTrip(req)
	if err == nil {
		_ = resp.Body.Close()
	}
	var aerr *addressError
	if !errors.Is(err, ErrForbiddenAddress) || !errors.As(err, &aerr) || aerr.proxy == nil {
		t.Fatalf("err = %v, want the proxy refused", err)
	}
	if got := forbiddenMessage("registry.example.com", false, aerr); got != "registry registry.example.com would be reached through the HTTP proxy, where pullgate cannot check the address connected to; list it in the policy to resolve against it" {
		t.Errorf("message: %s", got)
	}
	select {
	case <-accepted:
		t.Error("the proxy was contacted")
	default:
	}
}

// A call that never reached the registry leaves the breaker as it found it, except that a probe
// it used up is given back.
func TestBreakerRelease(t *testing.T) {
	t.Parallel()
	const cooldown = 10 * time.Second
	t0 := time.Unix(0, 0)
	b := &breaker{}
	b.done(t0, true, 2, cooldown) // one failure of two
	if ok, _ := b.allow(t0); !ok {
		t.Fatal("closed breaker refused")
	}
	b.release()
	b.done(t0, true, 2, cooldown) // the second failure opens it: the release did not reset the count
	if ok, _ := b.allow(t0); ok {
		t.Fatal("breaker not open after two failures around a release")
	}
	later := t0.Add(cooldown)
	if ok, _ := b.allow(later); !ok {
		t.Fatal("probe refused")
	}
	b.release() // the probe was refused by policy: the next call probes instead
	if ok, _ := b.allow(later); !ok {
		t.Fatal("no probe after a released one")
	}
	if d := b.done(later, false, 2, cooldown); d != -1 {
		t.Errorf("good probe: gauge delta %d, want -1", d)
	}
}

// What a pod author reads: which host, why, and what to list. The address a name resolved to
// is not in it.
func TestForbiddenMessage(t *testing.T) {
	t.Parallel()
	at := func(host, addr string) *addressError {
		a := netip.MustParseAddr(addr)
		return &addressError{host: host, addr: netip.AddrPortFrom(a, 443), class: addressClass(a)}
	}
	tests := []struct {
		registry string
		listed   bool
		aerr     *addressError
		want     string
	}{
		{"10.0.0.5:8080", false, at("10.0.0.5:8080", "10.0.0.5"),
			"registry 10.0.0.5:8080 resolves to a private address; list it in the policy to resolve against it"},
		{"169.254.169.254", false, at("169.254.169.254:443", "169.254.169.254"),
			"registry 169.254.169.254 resolves to a link-local address; list it in the policy to resolve against it"},
		{"Registry.Example.com", false, at("registry.example.com:443", "10.1.2.3"),
			"registry Registry.Example.com resolves to a private address; list it in the policy to resolve against it"},
		{"evil.example.com", false, at("metadata.internal:80", "169.254.169.254"),
			"registry evil.example.com sent pullgate to metadata.internal (a token realm or a redirect), which resolves to a link-local address; list both evil.example.com and metadata.internal in the policy to allow it"},
		{"registry.example.com", true, at("gitlab.example.com:443", "10.1.2.4"),
			"registry registry.example.com sent pullgate to gitlab.example.com (a token realm or a redirect), which resolves to a private address; list gitlab.example.com in the policy to allow it"},
	}
	for _, tt := range tests {
		if got := forbiddenMessage(tt.registry, tt.listed, tt.aerr); got != tt.want {
			t.Errorf("forbiddenMessage(%s, %v, %v):\n  %s\nwant\n  %s", tt.registry, tt.listed, tt.aerr, got, tt.want)
		}
	}
}
