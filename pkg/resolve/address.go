package resolve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
)

// Pod authors choose the registry of an image, so a host the policy does not list is a host an
// attacker may have chosen: 169.254.169.254, the kubelet on 127.0.0.1:10250, an in-cluster
// service on 10.0.0.5:8080. The resolver's requests (ping, token realm, manifests, redirects)
// to such hosts may reach public unicast addresses only, unless Options.AllowPrivateUnlisted.
// The check is made on the address each connection is about to be opened to, after name
// resolution, so neither a name that resolves (or rebinds) to a private address nor a redirect
// or token realm pointing at one gets around it.

// addressClass names what makes ip unfit for a host the policy does not list, as a noun phrase
// for error messages; "" means ip is a public unicast address. IPv4-mapped IPv6 addresses are
// judged as the IPv4 address they map, and NAT64 addresses (64:ff9b::/96) as the IPv4 address
// they embed, since that is where the connection ends up.
func addressClass(ip netip.Addr) string {
	ip = ip.WithZone("").Unmap() // a zoned address never matches a prefix
	if ip.Is6() && nat64.Contains(ip) {
		b := ip.As16()
		return addressClass(netip.AddrFrom4([4]byte(b[12:])))
	}
	switch {
	case !ip.IsValid():
		return "an invalid address"
	case ip.IsUnspecified():
		return "the unspecified address"
	case ip.IsLoopback():
		return "a loopback address"
	case ip.IsMulticast():
		return "a multicast address"
	case ip.IsLinkLocalUnicast():
		return "a link-local address"
	case ip.Is4() && ip.IsPrivate():
		return "a private address"
	case ip.IsPrivate():
		return "a unique-local address"
	}
	for _, n := range nonPublic {
		if n.prefix.Contains(ip) {
			return n.class
		}
	}
	if ip.Is6() && !globalUnicast6.Contains(ip) {
		// Outside 2000::/3, IANA has allocated no global unicast space: site-local fec0::/10,
		// IPv4-compatible ::/96, SIIT, discard-only 100::/64 and the rest.
		return "a reserved address"
	}
	if !ip.IsGlobalUnicast() {
		return "a reserved address" // whatever net/netip knows of that the lists above do not
	}
	return ""
}

var (
	nat64          = netip.MustParsePrefix("64:ff9b::/96")
	globalUnicast6 = netip.MustParsePrefix("2000::/3")
	// nonPublic are the special-purpose blocks (IANA's registries, "globally reachable: false")
	// that net/netip's predicates do not cover.
	nonPublic = []struct {
		prefix netip.Prefix
		class  string
	}{
		{netip.MustParsePrefix("0.0.0.0/8"), "a reserved address"}, // "this network"
		{netip.MustParsePrefix("100.64.0.0/10"), "a carrier-grade NAT address"},
		{netip.MustParsePrefix("192.0.0.0/24"), "a reserved address"},    // IETF protocol assignments
		{netip.MustParsePrefix("192.0.2.0/24"), "a reserved address"},    // documentation
		{netip.MustParsePrefix("192.88.99.0/24"), "a reserved address"},  // 6to4 relays, deprecated
		{netip.MustParsePrefix("198.18.0.0/15"), "a reserved address"},   // benchmarking
		{netip.MustParsePrefix("198.51.100.0/24"), "a reserved address"}, // documentation
		{netip.MustParsePrefix("203.0.113.0/24"), "a reserved address"},  // documentation
		{netip.MustParsePrefix("240.0.0.0/4"), "a reserved address"},     // reserved, and broadcast
		{netip.MustParsePrefix("2001::/23"), "a reserved address"},       // IETF protocol assignments, Teredo
		{netip.MustParsePrefix("2001:db8::/32"), "a reserved address"},   // documentation
		{netip.MustParsePrefix("2002::/16"), "a reserved address"},       // 6to4: embeds any IPv4 address
		{netip.MustParsePrefix("3fff::/20"), "a reserved address"},       // documentation
	}
)

// addressError is a refused connection: the dialer's, to an address that is not public, or the
// proxy function's, for a request that would go through a proxy (which pullgate cannot hold to
// public addresses).
type addressError struct {
	host  string         // as dialled, host:port, or the request's host for a proxy
	addr  netip.AddrPort // what host resolved to; zero for a proxy
	class string         // addressClass, "" for a proxy
	proxy *url.URL       // the proxy the request would have gone through
}

func (e *addressError) Error() string {
	if e.proxy != nil {
		return fmt.Sprintf("%s: refusing to connect through the proxy %s, which pullgate cannot keep to public addresses", e.host, e.proxy.Redacted())
	}
	return fmt.Sprintf("%s: refusing to connect to %s, %s", e.host, e.addr, e.class)
}

func (e *addressError) Unwrap() error { return ErrForbiddenAddress }

// forbidden is what classify makes of an addressError: a message for pod authors, which says
// what to list and does not reveal the address a name resolved to, and the whole chain for
// errors.As (the addressError, with the address, included).
type forbidden struct {
	msg string
	err error
}

func (f *forbidden) Error() string   { return f.msg }
func (f *forbidden) Unwrap() []error { return []error{ErrForbiddenAddress, f.err} }

// forbiddenMessage says why a request on behalf of registry (as RegistryStr spells it) was
// refused, and what to list in the policy to allow it. listed is whether registry is listed.
func forbiddenMessage(registry string, listed bool, aerr *addressError) string {
	host := hostKey(aerr.host)
	why := "resolves to " + aerr.class
	if aerr.proxy != nil {
		why = "would be reached through the HTTP proxy, where pullgate cannot check the address connected to"
	}
	if host == hostKey(registry) {
		return fmt.Sprintf("registry %s %s; list it in the policy to resolve against it", registry, why)
	}
	what := "list " + host
	if !listed {
		what = "list both " + registry + " and " + host
	}
	return fmt.Sprintf("registry %s sent pullgate to %s (a token realm or a redirect), which %s; %s in the policy to allow it", registry, host, why, what)
}

// addressCheck says why a guarded connection may not go to ap (an addressClass), or "" when it
// may. Tests replace publicOnly to let a loopback server play a public one.
type addressCheck func(ap netip.AddrPort) string

func publicOnly(ap netip.AddrPort) string { return addressClass(ap.Addr()) }

// guardedDial is d's DialContext, refusing every address check does not allow. The check runs
// in the dialer's Control hook, on the address the socket is about to connect to: after name
// resolution, once per address tried.
func guardedDial(d net.Dialer, check addressCheck) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d.ControlContext = func(_ context.Context, _, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return &addressError{class: "an address that cannot be checked (" + err.Error() + ")"}
		}
		if class := check(ap); class != "" {
			return &addressError{addr: ap, class: class}
		}
		return nil
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := d.DialContext(ctx, network, addr)
		if aerr := (*addressError)(nil); errors.As(err, &aerr) {
			// Fresh for this dial: the Control hook knows the address, not the name.
			aerr.host = addr
		}
		return conn, err
	}
}

// refuseProxy is a Transport.Proxy for guarded transports: a request that proxy would send
// through a proxy is refused, since the proxy, not pullgate, would choose the address it
// connects to. (http.ProxyFromEnvironment never proxies loopback hosts; those reach the
// dialer's check.)
func refuseProxy(proxy func(*http.Request) (*url.URL, error)) func(*http.Request) (*url.URL, error) {
	return func(req *http.Request) (*url.URL, error) {
		u, err := proxy(req)
		if err != nil || u == nil {
			return nil, err
		}
		return nil, &addressError{host: req.URL.Host, proxy: u}
	}
}

// route picks, per request and by the configuration in force then (sessions outlive reloads),
// the registry's own transport or its guarded twin (public addresses only, no proxy). Requests
// to listed hosts, or any request when AllowPrivateUnlisted, go the open way; everything else,
// a listed registry's challenge to another host included, goes guarded, so a registry cannot
// send pullgate to a private address of its choosing. Hosts are compared by hostKey.
type route struct {
	r             *Resolver
	registry      string // hostKey of the session's registry
	open, guarded http.RoundTripper
}

func (rt *route) RoundTrip(req *http.Request) (*http.Response, error) {
	cfg := rt.r.cfg.Load()
	host := hostKey(req.URL.Host)
	if cfg.allowPrivate || (cfg.listed[rt.registry] && (host == rt.registry || cfg.listed[host])) {
		return rt.open.RoundTrip(req)
	}
	return rt.guarded.RoundTrip(req)
}

// hostKey is host (host[:port], as a registry name or a URL spells it) in lower case without
// port 80 or 443, so that a registry listed as "harbor.example.com" covers its token service at
// https://Harbor.example.com:443/service/token, and one listed as "10.0.0.5:5000" covers port
// 5000 only.
func hostKey(host string) string {
	host = strings.ToLower(host)
	i := strings.LastIndexByte(host, ':')
	if i < 0 || (strings.Contains(host[:i], ":") && !strings.HasSuffix(host[:i], "]")) {
		return host // no port, or an IPv6 address without brackets (and so without a port)
	}
	if port := host[i+1:]; port == "80" || port == "443" {
		return host[:i]
	}
	return host
}
