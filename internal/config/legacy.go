package config

import (
	"bytes"
	"strings"
)

// The original leproxy read mapping.txt line by line: a line starting with
// '#' is a comment, an empty line is skipped, and any other line is split at
// its first colon into a host and a backend, both trimmed of white space.
// Most such files are YAML already. rewriteLegacy turns the lines that are
// not into equivalent YAML, one line for one line, so that line numbers in
// errors stay those of the file:
//
//   - "host: @name", an abstract socket: YAML reserves '@', so the value is
//     quoted (at any indentation, since '@' can never start a YAML value);
//   - "host: [::1]:8080", an IPv6 backend, which YAML would read as a list:
//     the value is quoted;
//   - "host:127.0.0.1:8080", no space after the first colon, on a line that
//     is not indented: the value is quoted (YAML would read the whole line
//     as one string; only "tcp:" may be followed by a flow indicator);
//   - "*.example.com: ...", which YAML reads as an alias: the key is quoted,
//     so that the validator can say what is wrong with it;
//   - a file made only of "host: backend" lines, comments and blank lines,
//     some indented (the original trimmed them): the indentation is
//     removed.
//
// A line holding a line break other than "\n" or a final "\r" is left
// alone, so that the YAML parser sees the same lines as this function.
func rewriteLegacy(data []byte) []byte {
	lines := strings.Split(string(data), "\n")
	ends := make([]string, len(lines)) // "\r" or ""
	safe := make([]bool, len(lines))
	for i, line := range lines {
		if strings.HasSuffix(line, "\r") {
			line, ends[i] = line[:len(line)-1], "\r"
		}
		lines[i] = line
		safe[i] = !strings.ContainsAny(line, "\r\u0085\u2028\u2029")
	}

	changed := false
	if dedent := plainLegacy(lines, safe); dedent {
		for i, line := range lines {
			if t := strings.TrimLeft(line, " \t"); t != line {
				lines[i], changed = t, true
			}
		}
	}
	for i, line := range lines {
		if !safe[i] {
			continue
		}
		if fixed, ok := fixLegacyLine(line); ok {
			lines[i], changed = fixed, true
		}
	}
	if !changed {
		return data
	}
	var b bytes.Buffer
	b.Grow(len(data) + 16)
	for i, line := range lines {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(line)
		b.WriteString(ends[i])
	}
	return b.Bytes()
}

// plainLegacy reports whether every line is blank, a comment, or a one-line
// "host: backend" pair, and some such pair is indented: an original
// mapping.txt whose indentation YAML would misread. Such a file has no
// nesting, so removing the indentation changes no meaning.
func plainLegacy(lines []string, safe []bool) bool {
	indented := false
	for i, line := range lines {
		t := strings.TrimLeft(line, " \t")
		if t == "" || t[0] == '#' {
			continue
		}
		if !safe[i] {
			return false
		}
		key, after, ok := strings.Cut(t, ":")
		if !ok || !legacyKey(strings.TrimRight(key, " \t")) {
			return false
		}
		value, _ := splitComment(after)
		if value == "" || strings.ContainsRune("&!|>#{", rune(value[0])) || value[0] == '[' && !bracketAddr(value) {
			return false // empty (a nested mapping may follow), anchor, tag, block scalar, flow collection
		}
		if t != line {
			indented = true
		}
	}
	return indented
}

// fixLegacyLine rewrites one line as described at rewriteLegacy; ok is
// false when the line needs no change.
func fixLegacyLine(line string) (fixed string, ok bool) {
	rest := strings.TrimLeft(line, " \t")
	indent := line[:len(line)-len(rest)]
	if rest == "" || rest[0] == '#' {
		return "", false
	}
	key, after, found := strings.Cut(rest, ":")
	key = strings.TrimRight(key, " \t")
	if !found || !legacyKey(key) {
		return "", false
	}
	value, comment := splitComment(after)
	noSpace := after != "" && after[0] != ' ' && after[0] != '\t'
	quoteValue := value != "" && (value[0] == '@' ||
		value[0] == '[' && bracketAddr(value) ||
		noSpace && indent == "" && key != "tcp" && !yamlMappingLike(value))
	quoteKey := strings.HasPrefix(key, "*.")
	if !quoteValue && !quoteKey {
		return "", false
	}
	var b strings.Builder
	b.WriteString(indent)
	if quoteKey {
		b.WriteString(singleQuote(key))
	} else {
		b.WriteString(key)
	}
	b.WriteByte(':')
	switch {
	case quoteValue:
		b.WriteByte(' ')
		b.WriteString(singleQuote(value))
		if comment != "" {
			b.WriteByte(' ')
			b.WriteString(comment)
		}
	case strings.TrimLeft(after, " \t") != "":
		b.WriteByte(' ')
		b.WriteString(strings.TrimLeft(after, " \t"))
	}
	return b.String(), true
}

// legacyKey reports whether k can be a host key of a "host: backend" line:
// one word with no YAML indicator that would change how the line reads.
func legacyKey(k string) bool {
	if k == "" || k == "-" || k == "?" || k[0] == '*' && !strings.HasPrefix(k, "*.") {
		return false
	}
	return !strings.ContainsAny(k, " \t'\"[]{},#&!|>%@`")
}

// splitComment splits the rest of a line after a key's colon into the
// trimmed value and a trailing "# comment" (a '#' after white space, as in
// YAML).
func splitComment(s string) (value, comment string) {
	for i := 1; i < len(s); i++ {
		if s[i] == '#' && (s[i-1] == ' ' || s[i-1] == '\t') {
			return strings.TrimSpace(s[:i]), s[i:]
		}
	}
	return strings.TrimSpace(s), ""
}

// yamlMappingLike reports whether YAML would find a mapping in value (a
// colon followed by a space, or a final colon).
func yamlMappingLike(value string) bool {
	return strings.Contains(value, ": ") || strings.Contains(value, ":\t") || strings.HasSuffix(value, ":")
}

// bracketAddr reports whether s is a bracketed IPv6 address with an
// optional port, like "[::1]:8080".
func bracketAddr(s string) bool {
	if len(s) < 3 || s[0] != '[' {
		return false
	}
	end := strings.IndexByte(s, ']')
	if end < 0 {
		return false
	}
	inside, port := s[1:end], s[end+1:]
	if !strings.Contains(inside, ":") {
		return false
	}
	for i := 0; i < len(inside); i++ {
		c := inside[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || strings.IndexByte(":.%_-", c) >= 0) {
			return false
		}
	}
	if port == "" {
		return true
	}
	return port[0] == ':' && strings.Trim(port[1:], "0123456789") == ""
}

// singleQuote returns s as a YAML single-quoted scalar.
func singleQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
