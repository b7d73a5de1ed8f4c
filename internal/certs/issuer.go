package certs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/acme"
)

// IssuerConfig is one ACME CA of Config.Issuers.
type IssuerConfig struct {
	// Name labels the issuer in logs, metrics and Status ("letsencrypt",
	// "zerossl", or the directory URL); empty means DirectoryURL.
	Name string
	// DirectoryURL is the CA's ACME directory.
	DirectoryURL string
	// EABKeyID and EABHMAC are the issuer's External Account Binding
	// credentials, both or neither; EABHMAC is base64url.
	EABKeyID, EABHMAC string
	// Profile is the ACME profile (draft-aaron-acme-profiles) every
	// order names, such as Let's Encrypt's "shortlived"; empty lets the
	// CA choose. New fails if the CA's directory does not list it.
	Profile string
}

// fallbackAfter is how many consecutive failed orders of one certificate at
// one issuer, for a reason that may be the CA's (see unavailable for the
// failures that move on at once), make its next orders go to the next
// issuer.
const fallbackAfter = 3

// profileCheckTimeout bounds reading an issuer's directory at start to
// check its profile.
const profileCheckTimeout = 15 * time.Second

// IssuerFlags are the command-line flags that describe the issuers.
type IssuerFlags struct {
	// ACME is the -acme value: a comma-separated list of directory URLs
	// or well-known names (see ResolveDirectory); "local" alone selects
	// the local CA.
	ACME string
	// EAB is the -acme-eab value: comma-separated ISSUER=FILE entries,
	// where ISSUER is a name or URL as written in ACME (or its 1-based
	// position) and FILE holds the key ID and the base64url HMAC key
	// separated by white space; "env:VAR" instead of FILE reads the same
	// from the environment variable VAR.
	EAB string
	// Profile is the -acme-profile value: comma-separated [ISSUER=]NAME
	// entries; a NAME without ISSUER is the first issuer's.
	Profile string
	// Getenv reads the environment; nil means os.Getenv.
	Getenv func(string) string
}

// ParseIssuers turns the issuer flags into Config.Issuers, or reports
// local for "-acme local". Errors name the flag and the entry.
func ParseIssuers(f IssuerFlags) (issuers []IssuerConfig, local bool, err error) {
	getenv := f.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	var names []string
	for part := range strings.SplitSeq(f.ACME, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, false, fmt.Errorf("-acme %q: empty entry in the issuer list", f.ACME)
		}
		dirURL, isLocal, err := ResolveDirectory(part)
		if err != nil {
			return nil, false, fmt.Errorf("-acme: %w", err)
		}
		if isLocal {
			if strings.Contains(f.ACME, ",") {
				return nil, false, errors.New("-acme: local cannot be combined with ACME issuers")
			}
			return nil, true, nil
		}
		for _, is := range issuers {
			if is.DirectoryURL == dirURL {
				return nil, false, fmt.Errorf("-acme: issuer %s listed twice", part)
			}
		}
		names = append(names, part)
		issuers = append(issuers, IssuerConfig{Name: issuerLabel(part, dirURL), DirectoryURL: dirURL})
	}
	err = forEachEntry(f.EAB, names, "-acme-eab", true, func(i int, src string) error {
		kid, hmac, err := readEAB(src, getenv)
		if err != nil {
			return err
		}
		issuers[i].EABKeyID, issuers[i].EABHMAC = kid, hmac
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	err = forEachEntry(f.Profile, names, "-acme-profile", false, func(i int, profile string) error {
		if profile == "" {
			return errors.New("empty profile name")
		}
		issuers[i].Profile = profile
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return issuers, false, nil
}

// issuerLabel names an issuer as written in -acme: a well-known name in
// lower case, a URL as it is.
func issuerLabel(written, dirURL string) string {
	if strings.Contains(written, "://") {
		return dirURL
	}
	return strings.ToLower(written)
}

// forEachEntry calls f for each ISSUER=VALUE entry of the comma-separated
// spec with the index of the issuer among names; a bare VALUE is the first
// issuer's unless needIssuer. ISSUER is a name of names (compared like
// issuerLabel) or a 1-based position.
func forEachEntry(spec string, names []string, flagName string, needIssuer bool, f func(i int, value string) error) error {
	if strings.TrimSpace(spec) == "" {
		return nil
	}
	seen := make(map[int]bool)
	for entry := range strings.SplitSeq(spec, ",") {
		entry = strings.TrimSpace(entry)
		i, value, ok := splitIssuerEntry(entry, names)
		if !ok {
			if needIssuer || strings.Contains(entry, "=") {
				return fmt.Errorf("%s %q: want ISSUER=VALUE with ISSUER one of %s or its position", flagName, entry, strings.Join(names, ", "))
			}
			i, value = 0, entry
		}
		if seen[i] {
			return fmt.Errorf("%s: issuer %s given twice", flagName, names[i])
		}
		seen[i] = true
		if err := f(i, value); err != nil {
			return fmt.Errorf("%s %s: %w", flagName, names[i], err)
		}
	}
	return nil
}

// splitIssuerEntry splits ISSUER=VALUE at the '=' after which the prefix
// names an issuer (a URL may contain '=' itself).
func splitIssuerEntry(entry string, names []string) (int, string, bool) {
	for j := 0; j < len(entry); j++ {
		if entry[j] != '=' {
			continue
		}
		prefix := strings.TrimSpace(entry[:j])
		if n, err := strconv.Atoi(prefix); err == nil && n >= 1 && n <= len(names) {
			return n - 1, strings.TrimSpace(entry[j+1:]), true
		}
		if i := slices.IndexFunc(names, func(s string) bool { return strings.EqualFold(s, prefix) }); i >= 0 {
			return i, strings.TrimSpace(entry[j+1:]), true
		}
	}
	return 0, "", false
}

// readEAB reads "KID HMAC" from a file, or from an environment variable
// for "env:VAR".
func readEAB(src string, getenv func(string) string) (kid, hmac string, err error) {
	var data string
	if v, ok := strings.CutPrefix(src, "env:"); ok {
		data = getenv(v)
		if data == "" {
			return "", "", fmt.Errorf("environment variable %s is empty or not set", v)
		}
	} else {
		b, err := os.ReadFile(src) // #nosec G304 -- the operator's own EAB file
		if err != nil {
			return "", "", fmt.Errorf("reading EAB file: %w", err)
		}
		if len(b) > 64<<10 {
			return "", "", fmt.Errorf("EAB file %s is larger than 64 KiB", src)
		}
		data = string(b)
	}
	fields := strings.Fields(data)
	if len(fields) != 2 {
		return "", "", fmt.Errorf("%s holds %d fields, want the key ID and the HMAC key", src, len(fields))
	}
	return fields[0], fields[1], nil
}

// accountKeyName returns the Storage key of the account key at the CA
// dirURL: acme_account+key+ followed by the URL's host, port and path
// with every character other than a letter, digit, dot or dash made a
// dash.
func accountKeyName(dirURL string) string {
	s := dirURL
	if u, err := url.Parse(dirURL); err == nil && u.Host != "" {
		s = u.Host + u.Path
	}
	var b strings.Builder
	for _, r := range strings.ToLower(strings.Trim(s, "/")) {
		if 'a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '.' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	return acmeAccountKey + "+" + b.String()
}

// accountError is a failure to set up the ACME account at an issuer: the
// issuer cannot be used until it is fixed or the CA is back.
type accountError struct{ err error }

func (e *accountError) Error() string { return e.err.Error() }
func (e *accountError) Unwrap() error { return e.err }

// Problem types after which an order goes to the next issuer at once: the
// CA is out of service for us or will not issue for this name.
var fallbackProblems = []string{
	"urn:ietf:params:acme:error:rateLimited",
	"urn:ietf:params:acme:error:serverInternal",
	"urn:ietf:params:acme:error:caa",
	"urn:ietf:params:acme:error:rejectedIdentifier",
	"urn:ietf:params:acme:error:unsupportedIdentifier",
	"urn:ietf:params:acme:error:externalAccountRequired",
	"urn:ietf:params:acme:error:invalidProfile",
}

// unavailable reports whether err, from an order at one issuer, means
// that issuer cannot serve us now, so that the same order goes on at the
// next issuer: the CA could not be reached (connection refused, DNS,
// TLS, timeout), answered 5xx, refused the account, or answered one of
// fallbackProblems. Other failures (the CA could not validate our
// challenge, which another CA would not either) count towards
// fallbackAfter instead.
func unavailable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, ErrClosed) {
		return false
	}
	var ae *accountError
	if errors.As(err, &ae) {
		return true
	}
	var ue *url.Error
	var oe *net.OpError
	if errors.As(err, &ue) || errors.As(err, &oe) {
		return true
	}
	if p := problem(err); p != nil {
		return p.StatusCode >= 500 || slices.Contains(fallbackProblems, p.ProblemType)
	}
	return false
}

// checkProfile fails if the issuer names a profile its directory does not
// list; a directory that cannot be read now is only logged (the CA may be
// down at start; each order checks the profile again).
func (m *Manager) checkProfile(ctx context.Context, is *issuer) error {
	if is.profile == "" {
		return nil
	}
	c := &acme.Client{DirectoryURL: is.dirURL, HTTPClient: is.httpc, UserAgent: "leproxy"}
	dir, err := c.Discover(ctx)
	if err != nil {
		m.log.Warn("ACME profile not checked: directory unreachable", "issuer", is.name, "ca", is.dirURL, "profile", is.profile, "error", err)
		return nil
	}
	if _, ok := dir.Profiles[acme.ProfileName(is.profile)]; ok {
		return nil
	}
	listed := make([]string, 0, len(dir.Profiles))
	for p := range dir.Profiles {
		listed = append(listed, string(p))
	}
	slices.Sort(listed)
	if len(listed) == 0 {
		return fmt.Errorf("certs: issuer %s offers no ACME profiles, so profile %q cannot be used", is.name, is.profile)
	}
	return fmt.Errorf("certs: issuer %s does not offer ACME profile %q; it lists %s", is.name, is.profile, strings.Join(listed, ", "))
}
