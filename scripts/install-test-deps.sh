#!/usr/bin/env bash
# Installs what the end-to-end tests use besides Go, only when it is missing: nginx (the IoT Edge
# API proxy is nginx; test/e2e/nginx_test.go runs deploy/nginx/outpost.conf in a real one).
# Idempotent and quiet. It never fails the build: when nginx cannot be installed (no apt-get, not
# root, no network) it says so in one line and the nginx test skips with its reason.
set -u

have_nginx() {
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || [ -x /usr/local/sbin/nginx ]
}

if have_nginx; then
	exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "test-deps: nginx is not installed and there is no apt-get; the nginx e2e test will skip" >&2
	exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		sudo="sudo -n"
	else
		echo "test-deps: nginx is not installed and installing it needs root; the nginx e2e test will skip" >&2
		exit 0
	fi
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if $sudo apt-get update -qq >"$log" 2>&1 &&
	$sudo apt-get install -y -qq --no-install-recommends nginx >>"$log" 2>&1 && have_nginx; then
	echo "test-deps: installed nginx ($(nginx -v 2>&1 || /usr/sbin/nginx -v 2>&1))"
else
	echo "test-deps: could not install nginx (apt-get: $(tail -n 1 "$log")); the nginx e2e test will skip" >&2
fi
exit 0
