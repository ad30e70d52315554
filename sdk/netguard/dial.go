package netguard

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// Dialer returns a *net.Dialer with the given connect timeout whose Control
// hook applies [Options.Check] to the address of every socket it connects:
// each address a host name resolved to (Go tries them one after another, and
// IPv4 and IPv6 in parallel, each through Control), and literal IPs alike.
// The hook runs after the socket is created and before connect, so a refused
// address is never contacted. A refusal surfaces as a *net.OpError wrapping
// a *[BlockedError]; errors.Is(err, ErrBlocked) holds. When every address of
// a name is refused, the error of the first is returned.
//
// With AllowPrivate the dialer has no hook. Control is used, not
// ControlContext; a caller that sets ControlContext on the returned dialer
// disables the check.
func (o Options) Dialer(timeout time.Duration) *net.Dialer {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	if !o.AllowPrivate {
		d.Control = o.control
	}
	return d
}

// control is the net.Dialer Control hook. address is "ip:port", or
// "[ip%zone]:port", the address being connected to.
func (o Options) control(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return &BlockedError{Reason: fmt.Sprintf("cannot check %s address %q", network, address)}
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return &BlockedError{Reason: fmt.Sprintf("cannot check %s address %q", network, address)}
	}
	return o.Check(ip)
}

// Transport timeouts. The overall per-request deadline is the caller's (the
// sink's timeout option, through http.Client.Timeout or the request's
// context); these bound the individual phases.
const (
	dialTimeout           = 10 * time.Second
	tlsHandshakeTimeout   = 10 * time.Second
	idleConnTimeout       = 90 * time.Second
	expectContinueTimeout = 1 * time.Second
	maxResponseHeaderSize = 1 << 20
)

// Transport returns an *http.Transport that dials through [Options.Dialer]
// (10 s connect timeout), with a 10 s TLS handshake timeout, 90 s idle
// connection timeout, 1 MiB response header limit and HTTP/2 enabled. It sets
// no ResponseHeaderTimeout: the caller bounds each request as a whole. The
// caller may adjust pool sizes (MaxIdleConnsPerHost and the like) freely,
// but must not replace DialContext, DialTLSContext or Proxy.
//
// Proxies: while the policy is on (AllowPrivate false), HTTP_PROXY,
// HTTPS_PROXY and the like are ignored. Through a proxy the dialer would
// connect to the proxy, not to the target; the proxy would resolve and reach
// the target itself, so the address check would be bypassed (and a proxy on
// a private address would itself be refused). With AllowPrivate the policy
// is off anyway and the environment's proxy settings are honoured as
// net/http's default transport does.
//
// The Proxy hook is also where HTTPSOnly is enforced for every request, a
// redirect included: a plain-http request fails with an error wrapping
// [ErrInvalidURL] before anything is dialled.
func (o Options) Transport() *http.Transport {
	return &http.Transport{
		Proxy:                  o.proxy,
		DialContext:            o.Dialer(dialTimeout).DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           100,
		IdleConnTimeout:        idleConnTimeout,
		TLSHandshakeTimeout:    tlsHandshakeTimeout,
		ExpectContinueTimeout:  expectContinueTimeout,
		MaxResponseHeaderBytes: maxResponseHeaderSize,
	}
}

// proxy is the Transport's per-request Proxy hook.
func (o Options) proxy(req *http.Request) (*url.URL, error) {
	if o.HTTPSOnly && !strings.EqualFold(req.URL.Scheme, "https") {
		return nil, fmt.Errorf("%w: https_only is set but the request uses %q", ErrInvalidURL, req.URL.Scheme)
	}
	if o.AllowPrivate {
		return http.ProxyFromEnvironment(req)
	}
	return nil, nil
}
