# Shell helpers shared by the bench/*.sh scripts; source it.

# free_port prints a TCP port on 127.0.0.1 that nothing listens on.
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
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
