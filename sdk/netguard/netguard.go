// Package netguard keeps action sinks from being turned against the network
// they run in.
//
// # The threat
//
// A sink POSTs records to a URL that somebody configured. If that somebody is
// not fully trusted (a pipeline file from a shared repository, a URL built
// from record fields, a tenant of a hosted deployment), the sink becomes a
// server-side request forgery (SSRF) tool: it can be pointed at services that
// are reachable from the engine's host but not from the outside, such as a
// database admin page on 127.0.0.1, an internal API on 10.0.0.0/8, or the
// cloud metadata endpoint at 169.254.169.254 that hands out the host's cloud
// credentials. Checking the host name in the URL is not enough: a public name
// can resolve to a private address (DNS rebinding, a record that changes
// between the check and the request, or one of several A/AAAA records), and
// one address has many spellings (::ffff:127.0.0.1, 64:ff9b::7f00:1, ...).
//
// # What is checked where
//
//   - [Options.Check] is the policy: it says whether one IP address may be
//     dialled, and if not, which class it belongs to.
//   - [Options.Dialer] installs that policy in a net.Dialer's Control hook,
//     which runs on the socket of every connection attempt, with the address
//     actually being connected to: after DNS resolution, for each of several
//     resolved addresses, and for literal IPs alike. Nothing that happens
//     before the connect (what the name resolved to a second ago, how the URL
//     spelled the address) can change what is checked. This is the check
//     that matters.
//   - [Options.Transport] is an *http.Transport that dials only through that
//     dialer, ignores proxy settings from the environment while the guard is
//     on (a proxy would resolve and connect to the target itself, out of the
//     guard's sight), and refuses plain-http requests when HTTPSOnly is set,
//     also on redirects should a caller follow them.
//   - [Options.CheckURL] validates a configured URL up front (scheme, host,
//     https_only, literal and "localhost" hosts), so that most mistakes are
//     reported when the pipeline is loaded rather than at the first delivery.
//     It is a convenience; the dial-time check does not depend on it.
//
// Every refusal wraps [ErrBlocked] (addresses) or [ErrInvalidURL] (URLs),
// also through the *url.Error and *net.OpError that net/http adds, so a
// caller can treat it as a permanent, non-retryable failure with errors.Is.
// Errors name the class of address and how to opt in; they never contain the
// configured URL, whose path or query may hold a secret (a Slack incoming
// webhook URL is itself a credential).
//
// # Opting out
//
// allow_private_networks = true on a sink ([Options.AllowPrivate]), or
// PIPELINE_ALLOW_PRIVATE_NETWORKS=1 in the environment ([Options.WithEnv]),
// switches the address policy off entirely, cloud metadata included; it is
// meant for local testing against receivers on loopback or a LAN.
//
// See [Options.Check] for the list of refused addresses and the IPv6
// tunnelling forms that are decoded.
package netguard

import (
	"errors"
	"os"
	"strings"
)

// EnvAllowPrivate is the environment variable that, set to "1" or "true",
// lets every sink reach private networks (see [Options.WithEnv]).
const EnvAllowPrivate = "PIPELINE_ALLOW_PRIVATE_NETWORKS"

// optIn is appended to every refusal so the user knows the way out.
const optIn = "set allow_private_networks = true on the sink, or " + EnvAllowPrivate + "=1"

// ErrBlocked is wrapped by every error that refuses an address under the
// policy. A blocked address will not become allowed by retrying.
var ErrBlocked = errors.New("netguard: address blocked")

// ErrInvalidURL is wrapped by every error [Options.CheckURL] (and the
// Transport's https_only check) returns for a URL that is malformed or not
// permitted, other than because of its address. It is permanent too.
var ErrInvalidURL = errors.New("netguard: URL not allowed")

// Options is a sink's network policy.
type Options struct {
	// AllowPrivate switches the address policy off: loopback, private,
	// link-local, CGNAT, metadata and other special addresses may be dialled.
	// It is the sink option allow_private_networks = true.
	AllowPrivate bool
	// HTTPSOnly refuses plain-http URLs. It is the sink option
	// https_only = true. It is independent of AllowPrivate.
	HTTPSOnly bool
}

// WithEnv returns o with AllowPrivate also set when the environment variable
// PIPELINE_ALLOW_PRIVATE_NETWORKS is "1" or "true" (any case, surrounding
// spaces ignored). The environment can only relax the policy, never tighten
// what a sink allows.
func (o Options) WithEnv() Options {
	switch strings.ToLower(strings.TrimSpace(os.Getenv(EnvAllowPrivate))) {
	case "1", "true":
		o.AllowPrivate = true
	}
	return o
}
