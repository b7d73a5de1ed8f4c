#!/bin/sh
# On removal (not on upgrade), stops and disables the service.
set -e
case "$1" in
remove | 0)
	if [ -d /run/systemd/system ]; then
		systemctl disable --now leproxy.service || true
	fi
	;;
esac
