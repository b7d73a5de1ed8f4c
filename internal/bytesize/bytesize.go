// Package bytesize parses the byte counts of the mapping file: an integer,
// or one with a unit (KB, MB, GB are powers of 1000, KiB, MiB, GiB of
// 1024), such as "16MiB" or "512".
package bytesize

import (
	"errors"
	"strconv"
	"strings"
)

// units are Parse's units, longest first.
var units = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1},
}

// Parse returns the positive byte count s names.
func Parse(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	switch {
	case err != nil || strings.TrimLeft(num, "0123456789") != "":
		return 0, errors.New("want a number of bytes, optionally with KB, MB, GB, KiB, MiB or GiB")
	case v <= 0:
		return 0, errors.New("must be positive")
	case v > (1<<62)/mult:
		return 0, errors.New("too large")
	}
	return v * mult, nil
}
