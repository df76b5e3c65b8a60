#!/usr/bin/env bash
# make test: the whole suite, as CI runs it — lint, unit tests, end-to-end tests of the real
# binary, helm lint. On a fresh machine a good part of its time goes to installing what the
# end-to-end tests use besides Go, so that runs beside work that leaves room for it: the
# distribution's packages (network and disk) during lint and the unit tests; helm (about three
# CPU-minutes of compiling) during the end-to-end tests that do not use it, which keep the two
# cores less than half busy. An installer's output is shown once it is waited for.
set -euo pipefail
cd "$(dirname "$0")/.."
m() { "${MAKE:-make}" --no-print-directory "$@"; }
# step TARGET...: runs make TARGET... and says how long it took, so that a slow CI run shows where.
step() {
	local start=$SECONDS
	m "$@"
	echo "make test: $* took $((SECONDS - start)) s (at $SECONDS s)"
}
mkdir -p .tools
# Never leave an installer running: apt-get stopped halfway would leave dpkg to repair.
trap 'wait' EXIT

{ m -s test-deps && echo "make test: test-deps done at $SECONDS s"; } >.tools/test-deps.log 2>&1 &
deps=$!
step lint
step unit
wait "$deps" || true # test-deps never fails: what it cannot install, the tests skip
cat .tools/test-deps.log

step build
{ m -s helm && echo "make test: helm ready at $SECONDS s"; } >.tools/helm.log 2>&1 &
helm=$!
step e2e-binary
if ! wait "$helm"; then
	cat .tools/helm.log >&2
	exit 1
fi
cat .tools/helm.log
step e2e-helm helm-test
