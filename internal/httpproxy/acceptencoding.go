package httpproxy

import (
	"strings"
)

// negotiateEncoding returns the content coding of offers (lower-case
// names, in the server's order of preference) that the Accept-Encoding
// header values accept with the highest quality, the earliest of offers
// on a tie, or "" when none is acceptable (RFC 9110 section 12.5.3). A
// coding the header does not name takes the quality of "*", if any; q=0
// refuses. An element whose q is not a valid qvalue is ignored.
func negotiateEncoding(values []string, offers []string) string {
	const unset = -1
	var q [4]int // per offer, in thousandths; offers are at most a few
	if len(offers) > len(q) {
		offers = offers[:len(q)]
	}
	for i := range q {
		q[i] = unset
	}
	star := unset
	for _, v := range values {
		for elem := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(elem, ";")
			name = strings.TrimSpace(name)
			if name == "" {
				continue
			}
			qv, ok := qvalue(params)
			if !ok {
				continue
			}
			if name == "*" {
				star = max(star, qv)
				continue
			}
			for i, o := range offers {
				if strings.EqualFold(name, o) {
					q[i] = max(q[i], qv)
				}
			}
		}
	}
	best, bestQ := "", 0
	for i, o := range offers {
		qi := q[i]
		if qi == unset {
			qi = star
		}
		if qi > bestQ {
			best, bestQ = o, qi
		}
	}
	return best
}

// qvalue finds the q parameter among the ";"-separated params of an
// Accept-Encoding element and returns it in thousandths; 1000 when there
// is none. It reports false for a malformed qvalue.
func qvalue(params string) (int, bool) {
	for p := range strings.SplitSeq(params, ";") {
		k, v, _ := strings.Cut(p, "=")
		if !strings.EqualFold(strings.TrimSpace(k), "q") {
			continue
		}
		return parseQ(strings.TrimSpace(v))
	}
	return 1000, true
}

// parseQ parses a qvalue: "0" or "1" with up to three decimals, 1 at most.
func parseQ(s string) (int, bool) {
	if s == "" || len(s) > 5 || s[0] != '0' && s[0] != '1' {
		return 0, false
	}
	n := int(s[0]-'0') * 1000
	if len(s) == 1 {
		return n, true
	}
	if s[1] != '.' {
		return 0, false
	}
	scale := 100
	for _, c := range s[2:] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n += int(c-'0') * scale
		scale /= 10
	}
	if n > 1000 {
		return 0, false
	}
	return n, true
}
