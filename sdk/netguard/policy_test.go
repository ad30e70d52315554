package netguard

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestCheckPolicy(t *testing.T) {
	tests := []struct {
		addr   string
		reason string // "" means allowed; otherwise a prefix of BlockedError.Reason
		detail string // a further substring of Reason, when set
	}{
		// Public addresses are allowed.
		{addr: "8.8.8.8"},
		{addr: "1.1.1.1"},
		{addr: "93.184.216.34"},
		{addr: "2001:4860::8888"},
		{addr: "2606:4700:4700::1111"},
		{addr: "::ffff:8.8.8.8"},
		{addr: "64:ff9b::808:808"},                     // NAT64 of 8.8.8.8
		{addr: "2002:808:808::1"},                      // 6to4 of 8.8.8.8
		{addr: "2001:0:4136:e378:8000:63bf:f7f7:f7f7"}, // Teredo client 8.8.8.8
		{addr: "100.63.255.255"},                       // just below CGNAT
		{addr: "100.128.0.0"},                          // just above CGNAT
		{addr: "172.15.255.255"},                       // just below 172.16/12
		{addr: "172.32.0.0"},                           // just above 172.16/12
		{addr: "169.253.255.255"},                      // just below link-local
		{addr: "11.0.0.1"},
		{addr: "223.255.255.255"}, // just below multicast
		{addr: "fbff:ffff::1"},    // just below ULA

		// Loopback.
		{addr: "127.0.0.1", reason: "loopback"},
		{addr: "127.255.255.254", reason: "loopback"},
		{addr: "::1", reason: "loopback"},
		// Unspecified.
		{addr: "0.0.0.0", reason: "unspecified address"},
		{addr: "0.1.2.3", reason: "unspecified address"},
		{addr: "::", reason: "unspecified address"},
		// RFC 1918.
		{addr: "10.0.0.1", reason: "private network (RFC 1918)"},
		{addr: "10.255.255.255", reason: "private network (RFC 1918)"},
		{addr: "172.16.0.1", reason: "private network (RFC 1918)"},
		{addr: "172.31.255.255", reason: "private network (RFC 1918)"},
		{addr: "192.168.1.1", reason: "private network (RFC 1918)"},
		// ULA and other private IPv6.
		{addr: "fc00::1", reason: "private network (unique local address"},
		{addr: "fd12:3456:789a::1", reason: "private network (unique local address"},
		{addr: "fec0::1", reason: "private network (deprecated site-local"},
		{addr: "64:ff9b:1::a00:1", reason: "private network (NAT64 local-use"},
		// Link-local.
		{addr: "169.254.1.1", reason: "link-local"},
		{addr: "fe80::1", reason: "link-local"},
		{addr: "fe80::1%eth0", reason: "link-local"},
		// CGNAT.
		{addr: "100.64.0.1", reason: "carrier-grade NAT"},
		{addr: "100.127.255.255", reason: "carrier-grade NAT"},
		// Cloud metadata, before the ranges that contain them.
		{addr: "169.254.169.254", reason: "cloud metadata endpoint", detail: "AWS"},
		{addr: "169.254.170.2", reason: "cloud metadata endpoint", detail: "ECS"},
		{addr: "169.254.170.23", reason: "cloud metadata endpoint", detail: "EKS"},
		{addr: "100.100.100.200", reason: "cloud metadata endpoint", detail: "Alibaba"},
		{addr: "168.63.129.16", reason: "cloud metadata endpoint", detail: "Azure"},
		{addr: "fd00:ec2::254", reason: "cloud metadata endpoint", detail: "AWS"},
		{addr: "fd00:ec2::23", reason: "cloud metadata endpoint", detail: "EKS"},
		// Multicast and broadcast.
		{addr: "224.0.0.1", reason: "multicast"},
		{addr: "239.255.255.250", reason: "multicast"},
		{addr: "ff02::1", reason: "multicast"},
		{addr: "ff05::1:3", reason: "multicast"},
		{addr: "255.255.255.255", reason: "broadcast"},
		// Reserved.
		{addr: "240.0.0.1", reason: "reserved", detail: "240.0.0.0/4"},
		{addr: "192.0.0.8", reason: "reserved", detail: "IETF"},
		{addr: "192.0.2.1", reason: "reserved", detail: "documentation"},
		{addr: "198.51.100.7", reason: "reserved", detail: "documentation"},
		{addr: "203.0.113.9", reason: "reserved", detail: "documentation"},
		{addr: "198.19.0.1", reason: "reserved", detail: "benchmarking"},
		{addr: "2001:db8::1", reason: "reserved", detail: "documentation"},
		{addr: "3fff::1", reason: "reserved", detail: "documentation"},
		{addr: "100::1", reason: "reserved", detail: "discard"},
		{addr: "::1:2:3:4", reason: "reserved", detail: "::/64"},

		// IPv4-mapped IPv6 forms.
		{addr: "::ffff:127.0.0.1", reason: "loopback", detail: "IPv4-mapped"},
		{addr: "::ffff:0.0.0.0", reason: "unspecified address", detail: "IPv4-mapped"},
		{addr: "::ffff:10.1.2.3", reason: "private network (RFC 1918)", detail: "IPv4-mapped"},
		{addr: "::ffff:169.254.169.254", reason: "cloud metadata endpoint", detail: "IPv4-mapped"},
		{addr: "::ffff:100.64.0.1", reason: "carrier-grade NAT", detail: "IPv4-mapped"},
		{addr: "::ffff:7f00:1", reason: "loopback", detail: "127.0.0.1"},
		// IPv4-compatible (deprecated): blocked whatever it embeds.
		{addr: "::127.0.0.1", reason: "loopback", detail: "IPv4-compatible"},
		{addr: "::169.254.169.254", reason: "cloud metadata endpoint", detail: "IPv4-compatible"},
		{addr: "::8.8.8.8", reason: "reserved", detail: "IPv4-compatible"},
		// IPv4-translated (SIIT, deprecated).
		{addr: "::ffff:0:127.0.0.1", reason: "loopback", detail: "IPv4-translated"},
		{addr: "::ffff:0:8.8.8.8", reason: "reserved", detail: "IPv4-translated"},
		// NAT64 well-known prefix.
		{addr: "64:ff9b::7f00:1", reason: "loopback", detail: "NAT64"},
		{addr: "64:ff9b::10.0.0.1", reason: "private network (RFC 1918)", detail: "NAT64"},
		{addr: "64:ff9b::a9fe:a9fe", reason: "cloud metadata endpoint", detail: "NAT64"},
		// 6to4.
		{addr: "2002:7f00:1::1", reason: "loopback", detail: "6to4"},
		{addr: "2002:c0a8:101::", reason: "private network (RFC 1918)", detail: "6to4"},
		{addr: "2002:a9fe:a9fe::1", reason: "cloud metadata endpoint", detail: "6to4"},
		// Teredo: client address is stored inverted; 0x80fffffe inverted is 127.0.0.1.
		{addr: "2001:0:4136:e378:8000:63bf:80ff:fffe", reason: "loopback", detail: "Teredo"},
		{addr: "2001:0:4136:e378:8000:63bf:f5ff:fffe", reason: "private network (RFC 1918)", detail: "Teredo"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			ip := netip.MustParseAddr(tt.addr)
			err := Options{}.Check(ip)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("Check(%s) = %v, want allowed", tt.addr, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Check(%s) = nil, want refused as %q", tt.addr, tt.reason)
			}
			if !errors.Is(err, ErrBlocked) {
				t.Errorf("errors.Is(%v, ErrBlocked) = false", err)
			}
			var be *BlockedError
			if !errors.As(err, &be) {
				t.Fatalf("error %T is not a *BlockedError", err)
			}
			if !strings.HasPrefix(be.Reason, tt.reason) {
				t.Errorf("Reason = %q, want prefix %q", be.Reason, tt.reason)
			}
			if tt.detail != "" && !strings.Contains(be.Reason, tt.detail) {
				t.Errorf("Reason = %q, want it to mention %q", be.Reason, tt.detail)
			}
			if be.Addr != ip {
				t.Errorf("Addr = %v, want %v", be.Addr, ip)
			}
			msg := err.Error()
			for _, want := range []string{ip.String(), be.Reason, "set allow_private_networks = true on the sink, or PIPELINE_ALLOW_PRIVATE_NETWORKS=1"} {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q does not contain %q", msg, want)
				}
			}

			// The opt-in turns every refusal off.
			if err := (Options{AllowPrivate: true}).Check(ip); err != nil {
				t.Errorf("with AllowPrivate, Check(%s) = %v, want nil", tt.addr, err)
			}
		})
	}
}

func TestCheckInvalidAddr(t *testing.T) {
	for _, o := range []Options{{}, {AllowPrivate: true}} {
		err := o.Check(netip.Addr{})
		if !errors.Is(err, ErrBlocked) {
			t.Errorf("%+v: Check(zero Addr) = %v, want ErrBlocked", o, err)
		}
	}
}

func TestWithEnv(t *testing.T) {
	tests := []struct {
		env  string
		set  bool
		base Options
		want Options
	}{
		{set: false, want: Options{}},
		{env: "", set: true, want: Options{}},
		{env: "1", set: true, want: Options{AllowPrivate: true}},
		{env: "true", set: true, want: Options{AllowPrivate: true}},
		{env: " TRUE ", set: true, want: Options{AllowPrivate: true}},
		{env: "0", set: true, want: Options{}},
		{env: "false", set: true, want: Options{}},
		{env: "yes", set: true, want: Options{}},
		// The environment never tightens what the sink allows, and leaves
		// HTTPSOnly alone.
		{env: "0", set: true, base: Options{AllowPrivate: true}, want: Options{AllowPrivate: true}},
		{env: "1", set: true, base: Options{HTTPSOnly: true}, want: Options{AllowPrivate: true, HTTPSOnly: true}},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			if tt.set {
				t.Setenv(EnvAllowPrivate, tt.env)
			} else {
				t.Setenv(EnvAllowPrivate, "") // restores the old value afterwards
				unsetEnv(t, EnvAllowPrivate)
			}
			if got := tt.base.WithEnv(); got != tt.want {
				t.Errorf("%+v.WithEnv() with %s=%q = %+v, want %+v", tt.base, EnvAllowPrivate, tt.env, got, tt.want)
			}
		})
	}
}
