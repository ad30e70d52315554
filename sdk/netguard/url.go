package netguard

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// CheckURL validates a configured URL before any request is made: the scheme
// must be http or https (https when HTTPSOnly), a host must be present, the
// port, if any, must be 1-65535, and a host that is an IP literal must pass
// [Options.Check]. Without AllowPrivate, "localhost" and names under
// ".localhost" (which RFC 6761 reserves for loopback) are refused too. Hosts
// that look like a shortened or non-decimal IPv4 address ("127.1",
// "2130706433", "0x7f.0.0.1") are refused always: they are not valid DNS
// names, and resolvers disagree about what they mean.
//
// Other host names are not resolved here: what a name resolves to now need
// not be what it resolves to when the request is sent, so that check belongs
// to the dialer ([Options.Dialer]), which makes it on every connection.
//
// Errors wrap [ErrInvalidURL], or [ErrBlocked] for a refused address or
// localhost name. They never repeat the URL, whose path or query may be a
// secret; at most the scheme and host appear.
func (o Options) CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the whole URL; keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("%w: cannot parse URL: %v", ErrInvalidURL, err)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if o.HTTPSOnly {
			return fmt.Errorf("%w: https_only is set but the URL uses http", ErrInvalidURL)
		}
	case "":
		return fmt.Errorf("%w: URL has no scheme (want http or https)", ErrInvalidURL)
	default:
		return fmt.Errorf("%w: unsupported scheme %q (want http or https)", ErrInvalidURL, u.Scheme)
	}
	host := u.Hostname()
	if host == "" {
		return fmt.Errorf("%w: URL has no host", ErrInvalidURL)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%w: invalid port %q", ErrInvalidURL, p)
		}
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return o.Check(ip)
	}
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if numericHost(name) {
		return fmt.Errorf("%w: host %q looks like a non-standard IPv4 address; write it as a dotted quad such as 192.0.2.1", ErrInvalidURL, host)
	}
	if !o.AllowPrivate && (name == "localhost" || strings.HasSuffix(name, ".localhost")) {
		return &BlockedError{Host: host, Reason: reasonLoopback + " (localhost name)"}
	}
	return nil
}

// numericHost reports whether the last label of a host name is a number,
// decimal or 0x-hex, as in the IPv4 shorthands "127.1", "2130706433" and
// "0x7f000001". No top-level domain is numeric, so no real name matches.
func numericHost(name string) bool {
	last := name[strings.LastIndexByte(name, '.')+1:]
	if last == "" {
		return false
	}
	digits := last
	if strings.HasPrefix(last, "0x") {
		digits = last[2:]
		for _, c := range digits {
			if !strings.ContainsRune("0123456789abcdef", c) {
				return false
			}
		}
		return true
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
