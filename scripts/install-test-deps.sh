#!/usr/bin/env bash
# Installs what the end-to-end tests use besides Go, each only when it is missing, from the
# distribution's packages: nginx (the IoT Edge API proxy; test/e2e/nginx_test.go), containerd and
# ctr (test/e2e/containerd_test.go), the Docker engine (test/e2e/docker_test.go), skopeo
# (test/e2e/delta_docker_test.go: layers compressed as podman and buildah do).
# Idempotent and quiet. It never fails the build: what cannot be installed (no apt-get, not root,
# no network) is said in one line, and the test that needs it skips with its reason.
set -u

sudo=""
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		sudo="sudo -n"
	else
		sudo="none"
	fi
fi
updated=""

# have NAME: the command is on PATH or in the usual sbin directories.
have() {
	command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/local/sbin/$1" ]
}

# install PACKAGE TEST COMMAND...: installs PACKAGE unless every COMMAND is there already.
install() {
	local pkg=$1 test=$2
	shift 2
	local missing=""
	for c in "$@"; do have "$c" || missing=1; done
	[ -z "$missing" ] && return 0
	if ! command -v apt-get >/dev/null 2>&1; then
		echo "test-deps: $pkg is not installed and there is no apt-get; the $test test will skip" >&2
		return 0
	fi
	if [ "$sudo" = none ]; then
		echo "test-deps: $pkg is not installed and installing it needs root; the $test test will skip" >&2
		return 0
	fi
	local log
	log=$(mktemp)
	if { [ -n "$updated" ] || DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq >"$log" 2>&1; } &&
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$pkg" >>"$log" 2>&1; then
		updated=1
		echo "test-deps: installed $pkg"
	else
		echo "test-deps: could not install $pkg (apt-get: $(tail -n 1 "$log")); the $test test will skip" >&2
	fi
	rm -f "$log"
	return 0
}

install nginx "nginx e2e" nginx
install containerd "containerd e2e" containerd ctr
install docker.io "Docker engine e2e" dockerd docker
install skopeo "skopeo delta e2e" skopeo
exit 0
