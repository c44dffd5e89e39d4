package main

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// secret reads a variable whose value must never appear in an error or a
// log: a bad one is reported by name and length only.
func (r *envReader) secret(name string, minBytes int) string {
	v := strings.TrimSpace(r.getenv(name))
	if v != "" && len(v) < minBytes && r.err == nil {
		r.err = fmt.Errorf("invalid %s (value hidden, %d bytes): want at least %d bytes, e.g. from `openssl rand -base64 48`", name, len(v), minBytes)
	}
	return v
}

// number reads a decimal number from 0 to hi; 0 turns the thing off.
func (r *envReader) number(name string, def, hi float64) float64 {
	raw := r.str(name, "")
	if raw == "" {
		return def
	}
	f, err := strconv.ParseFloat(raw, 64)
	if err != nil || f < 0 || f > hi || f != f {
		r.fail(name, raw, fmt.Sprintf("want a number from 0 (off) to %g, such as 10 or 0.5", hi))
		return def
	}
	return f
}

// prefixes reads comma-separated IP addresses or CIDR ranges.
func (r *envReader) prefixes(name string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range strings.Split(r.str(name, ""), ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if pre, err := netip.ParsePrefix(p); err == nil {
			out = append(out, pre.Masked())
		} else if ip, err := netip.ParseAddr(p); err == nil {
			out = append(out, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
		} else {
			r.fail(name, p, "want IP addresses or CIDR ranges, comma-separated, such as 10.0.0.0/8,127.0.0.1")
		}
	}
	return out
}

// urlPassword finds the password of each user:password@ in a URL list.
var urlPassword = regexp.MustCompile(`//[^:@/,]*:([^@/,]+)@`)

// hidePasswords replaces, in msg, every password that raw (REDIS_URL) holds:
// errors about the URL may quote it whole.
func hidePasswords(msg, raw string) string {
	for _, m := range urlPassword.FindAllStringSubmatch(raw, -1) {
		msg = strings.ReplaceAll(msg, m[1], "xxxxx")
	}
	return msg
}
