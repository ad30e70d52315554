package netguard

import (
	"fmt"
	"net/netip"
)

// BlockedError is the error for an address the policy refuses. It wraps
// [ErrBlocked].
type BlockedError struct {
	// Host is the host name the refusal is about, when the refusal came from
	// the name alone (CheckURL refusing "localhost"); empty otherwise.
	Host string
	// Addr is the refused address; the zero Addr when Host is set or the
	// address could not be parsed.
	Addr netip.Addr
	// Reason is the class of address, such as "loopback",
	// "private network (RFC 1918)" or "cloud metadata endpoint (AWS ...)".
	// For an IPv6 address that embeds an IPv4 one, it names the IPv4
	// address's class and how it was embedded.
	Reason string
}

func (e *BlockedError) Error() string {
	what := e.Host
	if what == "" && e.Addr.IsValid() {
		what = e.Addr.String()
	}
	if what == "" {
		return fmt.Sprintf("netguard: refusing to connect: %s; %s to allow it", e.Reason, optIn)
	}
	return fmt.Sprintf("netguard: refusing to connect to %s: %s; %s to allow it", what, e.Reason, optIn)
}

// Unwrap makes errors.Is(err, ErrBlocked) true.
func (e *BlockedError) Unwrap() error { return ErrBlocked }

// Check reports why ip may not be dialled, or nil when it may. With
// AllowPrivate every valid address is allowed. Otherwise these are refused,
// the first match giving the reason:
//
// IPv4:
//   - cloud metadata endpoints: 169.254.169.254 (AWS, GCP, Azure, Oracle,
//     DigitalOcean, OpenStack and most others), 169.254.170.2 (AWS ECS task
//     metadata), 169.254.170.23 (AWS EKS Pod Identity), 100.100.100.200
//     (Alibaba Cloud), 168.63.129.16 (Azure WireServer; a public-looking
//     address, so it is listed on its own)
//   - unspecified 0.0.0.0/8 (Linux connects 0.0.0.0 to the local host)
//   - loopback 127.0.0.0/8
//   - private network (RFC 1918) 10/8, 172.16/12, 192.168/16
//   - carrier-grade NAT (RFC 6598) 100.64/10
//   - link-local 169.254/16
//   - broadcast 255.255.255.255, multicast 224/4
//   - reserved: 240/4, IETF protocol assignments 192.0.0/24, documentation
//     192.0.2/24, 198.51.100/24, 203.0.113/24, benchmarking 198.18/15
//
// IPv6:
//   - cloud metadata endpoints fd00:ec2::254 (AWS), fd00:ec2::23 (AWS EKS Pod
//     Identity)
//   - unspecified ::, loopback ::1
//   - addresses that embed an IPv4 address, which is checked as above:
//     IPv4-mapped ::ffff:0:0/96 (treated as the IPv4 address itself), NAT64
//     64:ff9b::/96 (RFC 6052: the NAT64 gateway connects to the embedded
//     address), 6to4 2002::/16 (RFC 3056: bits 16-47), Teredo 2001::/32
//     (RFC 4380: the client address, stored inverted in the last 32 bits),
//     and the deprecated IPv4-compatible ::/96 and IPv4-translated
//     ::ffff:0:0:0/96 forms. A public embedded address is allowed for the
//     first four; the deprecated forms are refused as reserved whatever they
//     embed, as is the rest of ::/64.
//   - NAT64 local-use 64:ff9b:1::/48 (RFC 8215): its embedding depends on the
//     operator's prefix length, so it cannot be decoded; it is site-local by
//     definition and refused as a private network
//   - private network: unique local fc00::/7, deprecated site-local fec0::/10
//   - link-local fe80::/10 (a zone such as %eth0 is ignored)
//   - multicast ff00::/8
//   - reserved: discard-only 100::/64, documentation 2001:db8::/32 and
//     3fff::/20
//
// Not decoded: ISATAP interface identifiers (…:5efe:a.b.c.d), which can
// follow any prefix and are only reachable within the site that routes that
// prefix, and NAT64 network-specific prefixes other than the well-known one,
// which look like ordinary global addresses and cannot be recognised without
// knowing the local network (where such a prefix is configured, the NAT64
// gateway is the place to filter).
//
// The invalid (zero) Addr is always refused.
func (o Options) Check(ip netip.Addr) error {
	if !ip.IsValid() {
		return &BlockedError{Reason: "invalid address"}
	}
	if o.AllowPrivate {
		return nil
	}
	if reason := classify(ip); reason != "" {
		return &BlockedError{Addr: ip, Reason: reason}
	}
	return nil
}

type rule struct {
	prefix netip.Prefix
	reason string
}

func rules(pairs ...string) []rule {
	rs := make([]rule, 0, len(pairs)/2)
	for i := 0; i < len(pairs); i += 2 {
		rs = append(rs, rule{netip.MustParsePrefix(pairs[i]), pairs[i+1]})
	}
	return rs
}

const (
	reasonLoopback    = "loopback"
	reasonUnspecified = "unspecified address"
	reasonRFC1918     = "private network (RFC 1918)"
	reasonCGNAT       = "carrier-grade NAT (RFC 6598)"
	reasonLinkLocal   = "link-local"
	reasonMulticast   = "multicast"
	reasonBroadcast   = "broadcast"
	reasonMetadata    = "cloud metadata endpoint"
	reasonReserved    = "reserved"
	reasonULA         = "private network (unique local address, fc00::/7)"
)

// v4Rules are tried in order; the first match gives the reason, so the
// metadata addresses come before the ranges that contain them.
var v4Rules = rules(
	"169.254.169.254/32", reasonMetadata+" (AWS, GCP, Azure, Oracle, DigitalOcean, OpenStack)",
	"169.254.170.2/32", reasonMetadata+" (AWS ECS task metadata)",
	"169.254.170.23/32", reasonMetadata+" (AWS EKS Pod Identity)",
	"100.100.100.200/32", reasonMetadata+" (Alibaba Cloud)",
	"168.63.129.16/32", reasonMetadata+" (Azure WireServer)",
	"0.0.0.0/8", reasonUnspecified+" (0.0.0.0/8)",
	"127.0.0.0/8", reasonLoopback,
	"10.0.0.0/8", reasonRFC1918,
	"172.16.0.0/12", reasonRFC1918,
	"192.168.0.0/16", reasonRFC1918,
	"100.64.0.0/10", reasonCGNAT,
	"169.254.0.0/16", reasonLinkLocal,
	"255.255.255.255/32", reasonBroadcast,
	"224.0.0.0/4", reasonMulticast,
	"240.0.0.0/4", reasonReserved+" (240.0.0.0/4)",
	"192.0.0.0/24", reasonReserved+" (IETF protocol assignments, 192.0.0.0/24)",
	"192.0.2.0/24", reasonReserved+" (documentation, RFC 5737)",
	"198.51.100.0/24", reasonReserved+" (documentation, RFC 5737)",
	"203.0.113.0/24", reasonReserved+" (documentation, RFC 5737)",
	"198.18.0.0/15", reasonReserved+" (benchmarking, RFC 2544)",
)

// v6Exact are checked before any embedded IPv4 address is decoded.
var v6Exact = rules(
	"fd00:ec2::254/128", reasonMetadata+" (AWS)",
	"fd00:ec2::23/128", reasonMetadata+" (AWS EKS Pod Identity)",
	"::/128", reasonUnspecified+" (::)",
	"::1/128", reasonLoopback,
)

// v6Rules are checked after the embedded IPv4 forms.
var v6Rules = rules(
	"::/64", reasonReserved+" (::/64, including the deprecated IPv4-compatible and IPv4-translated forms)",
	"64:ff9b:1::/48", "private network (NAT64 local-use prefix, RFC 8215)",
	"fc00::/7", reasonULA,
	"fec0::/10", "private network (deprecated site-local, fec0::/10)",
	"fe80::/10", reasonLinkLocal,
	"ff00::/8", reasonMulticast,
	"100::/64", reasonReserved+" (discard-only, RFC 6666)",
	"2001:db8::/32", reasonReserved+" (documentation, RFC 3849)",
	"3fff::/20", reasonReserved+" (documentation, RFC 9637)",
)

var (
	prefixCompat     = netip.MustParsePrefix("::/96")
	prefixTranslated = netip.MustParsePrefix("::ffff:0:0:0/96")
	prefixNAT64      = netip.MustParsePrefix("64:ff9b::/96")
	prefix6to4       = netip.MustParsePrefix("2002::/16")
	prefixTeredo     = netip.MustParsePrefix("2001::/32")
)

// classify returns the reason ip is refused, or "" when it is allowed.
func classify(ip netip.Addr) string {
	ip = ip.WithZone("")
	if ip.Is4In6() {
		v4 := ip.Unmap()
		if r := classify4(v4); r != "" {
			return fmt.Sprintf("%s (%s as an IPv4-mapped IPv6 address)", r, v4)
		}
		return ""
	}
	if ip.Is4() {
		return classify4(ip)
	}
	for _, r := range v6Exact {
		if r.prefix.Contains(ip) {
			return r.reason
		}
	}
	if v4, form, ok := embedded(ip); ok {
		if r := classify4(v4); r != "" {
			return fmt.Sprintf("%s (%s embedded in a %s address)", r, v4, form)
		}
	}
	for _, r := range v6Rules {
		if r.prefix.Contains(ip) {
			return r.reason
		}
	}
	return ""
}

func classify4(ip netip.Addr) string {
	for _, r := range v4Rules {
		if r.prefix.Contains(ip) {
			return r.reason
		}
	}
	return ""
}

// embedded returns the IPv4 address an IPv6 address tunnels to, and the name
// of the form, for the forms listed in Check's documentation.
func embedded(ip netip.Addr) (netip.Addr, string, bool) {
	b := ip.As16()
	last := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{b[i], b[i+1], b[i+2], b[i+3]}) }
	switch {
	case prefixNAT64.Contains(ip):
		return last(12), "NAT64 (64:ff9b::/96)", true
	case prefix6to4.Contains(ip):
		return last(2), "6to4 (2002::/16)", true
	case prefixTeredo.Contains(ip):
		return netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]}), "Teredo (2001::/32)", true
	case prefixTranslated.Contains(ip):
		return last(12), "IPv4-translated (::ffff:0:0:0/96)", true
	case prefixCompat.Contains(ip):
		return last(12), "IPv4-compatible (::/96)", true
	}
	return netip.Addr{}, "", false
}
