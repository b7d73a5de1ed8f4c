package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
)

// A runArgs string field tagged `secret:"NAME,ENV[,what]"` is a secret: a
// credential that must not have to appear in /proc/PID/cmdline. It is
// read, first found wins, from
//
//  1. -NAME VALUE, when the field also has the flag tag NAME (works, with
//     a warning that every local user can read it);
//  2. -NAME-file FILE, defined for every secret (one final newline is
//     dropped);
//  3. the environment variable ENV;
//  4. $CREDENTIALS_DIRECTORY/NAME, the file systemd's LoadCredential=NAME:…
//     puts there.
//
// Giving both -NAME and -NAME-file is an error. "what" describes the secret
// in -NAME-file's usage when there is no -NAME flag.
const secretTag = "secret"

// maxSecretFile bounds a secret read from a file.
const maxSecretFile = 64 << 10

// secretFlag is one secret field of runArgs and its -NAME-file flag.
type secretFlag struct {
	name, env string
	plain     bool    // -NAME exists
	file      *string // -NAME-file's value
	field     *string
}

// secretFlags are the secrets of one parse.
type secretFlags []secretFlag

// defineSecretFlags defines -NAME-file for every secret field of a.
func defineSecretFlags(fs *flag.FlagSet, a *runArgs) secretFlags {
	var out secretFlags
	v := reflect.ValueOf(a).Elem()
	for i := range v.NumField() {
		f := v.Type().Field(i)
		tag, ok := f.Tag.Lookup(secretTag)
		if !ok {
			continue
		}
		parts := strings.SplitN(tag, ",", 3)
		if len(parts) < 2 || f.Type.Kind() != reflect.String {
			panic(fmt.Sprintf("runArgs.%s: secret tag %q: want a string field and NAME,ENV[,what]", f.Name, tag))
		}
		s := secretFlag{name: parts[0], env: parts[1], field: v.Field(i).Addr().Interface().(*string), file: new(string)}
		what := ""
		if len(parts) == 3 {
			what = parts[2]
		}
		if flagTag := f.Tag.Get("flag"); flagTag != "" {
			name, usage, _ := strings.Cut(flagTag, ",")
			if name != s.name {
				panic(fmt.Sprintf("runArgs.%s: secret name %q is not its flag name %q", f.Name, s.name, name))
			}
			s.plain = true
			if what == "" {
				what = usage
			}
		}
		fs.StringVar(s.file, s.name+"-file", "", fmt.Sprintf("file holding the %s (or $%s, or the systemd credential %s)", what, s.env, s.name))
		out = append(out, s)
	}
	return out
}

// resolve fills every secret field from its first source, given the flags
// set on the command line. It returns the names of secrets that were given
// on the command line, for a warning.
func (secrets secretFlags) resolve(set map[string]bool, getenv func(string) string) (onCommandLine []string, err error) {
	for _, s := range secrets {
		fileFlag := "-" + s.name + "-file"
		switch {
		case s.plain && set[s.name] && set[s.name+"-file"]:
			return nil, fmt.Errorf("-%s and %s both given: use one", s.name, fileFlag)
		case s.plain && set[s.name]:
			onCommandLine = append(onCommandLine, s.name)
		case set[s.name+"-file"]:
			v, err := readSecretFile(*s.file)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", fileFlag, err)
			}
			*s.field = v
		case getenv(s.env) != "":
			*s.field = getenv(s.env)
		case getenv("CREDENTIALS_DIRECTORY") != "":
			path := filepath.Join(getenv("CREDENTIALS_DIRECTORY"), s.name)
			v, err := readSecretFile(path)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("systemd credential %s: %w", s.name, err)
			}
			*s.field = v
		}
	}
	return onCommandLine, nil
}

// readSecretFile returns the content of a secret file less one final
// line ending. An empty secret is an error, not an unset one.
func readSecretFile(path string) (string, error) {
	f, err := os.Open(path) // #nosec G304 -- the operator's own -NAME-file argument, or a file in systemd's credentials directory
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	if len(b) > maxSecretFile {
		return "", fmt.Errorf("%s is larger than %d KiB", path, maxSecretFile>>10)
	}
	v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if v == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return v, nil
}
