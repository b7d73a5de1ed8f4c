# Shell helpers shared by the bench/*.sh scripts; source it.

# free_port prints a TCP port on 127.0.0.1 that nothing listens on and
# that it has not printed before in this script ($$ is the script's pid
# in the $(free_port) subshells too), so that ports picked before their
# listeners start do not collide.
free_port() {
	local p used=/tmp/bench-ports.$$
	while :; do
		p=$((20000 + RANDOM % 12768)) # below the ephemeral range (32768-60999), where an outgoing connection can take a port before its listener binds it
		grep -qx "$p" "$used" 2>/dev/null && continue
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p" >>"$used"
			echo "$p"
			return
		fi
	done
}

# self_signed KEY CERT SAN writes a one-day self-signed ECDSA P-256
# certificate (the kind leproxy serves) for SAN, e.g. DNS:localhost.
self_signed() {
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
		-subj "/CN=${3#*:}" -addext "subjectAltName=$3" \
		-keyout "$1" -out "$2" 2>/dev/null
}

# cpu_ticks PID prints the user+system CPU time PID has used so far, in
# clock ticks (getconf CLK_TCK per second): fields 14 and 15 of
# /proc/PID/stat, after the command name in parentheses.
cpu_ticks() {
	local stat
	stat=$(<"/proc/$1/stat")
	stat=${stat##*) }
	awk '{ print $12 + $13 }' <<<"$stat"
}

# us_per TICKS COUNT prints TICKS of CPU time in microseconds per COUNT.
us_per() {
	awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { if (n > 0) printf "%.1f\n", t / hz * 1e6 / n; else print "nan" }'
}

# median prints the median of its arguments (numbers; "-" for none).
median() {
	[[ $# -gt 0 ]] || { echo -; return; }
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ratio A B prints A/B to three places, "-" when either is missing.
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || a == "" || b == "" || b == 0) print "-"; else printf "%.3f\n", a / b }'
}
