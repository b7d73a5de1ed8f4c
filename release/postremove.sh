#!/bin/sh
# Forgets the removed unit. The certificate cache, /var/cache/leproxy (a
# DynamicUser directory under /var/cache/private), is kept: it holds the
# ACME account and certificates that a reinstall would otherwise re-order.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
