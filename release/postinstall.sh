#!/bin/sh
# Makes systemd see the unit, and starts nothing: leproxy would ask an ACME
# CA for certificates as soon as it starts, so the operator first edits
# /etc/leproxy/mapping.yml, then enables the service. An upgrade restarts
# a running leproxy on the new binary.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	if systemctl is-active --quiet leproxy.service; then
		systemctl try-restart leproxy.service || true
		exit 0
	fi
fi
case "$1" in
configure | 1)
	if [ -z "$2" ]; then
		cat <<'MSG'
leproxy is installed and not started. Edit /etc/leproxy/mapping.yml
(check it with: leproxy -check -map /etc/leproxy/mapping.yml), then:
    systemctl enable --now leproxy
MSG
	fi
	;;
esac
