#!/bin/sh
# Build ucgw twice (release, and AddressSanitizer + UndefinedBehaviorSanitizer)
# and run the whole test suite against both, then each fuzz target for a while.
# Installs its packages first (as root, unless UCGW_SKIP_DEPS is set).
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] && [ -z "${UCGW_SKIP_DEPS:-}" ] && sh packaging/install-deps.sh
# playwright-core for browser.test_dashboard (pinned in tests/browser/package-lock.json);
# without it (no npm registry) that one test is skipped, and says so
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error) ||
	echo "npm ci failed: browser.test_dashboard will be skipped"
jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DUCGW_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
echo "== tests, release build =="
ctest --test-dir build --output-on-failure -j2 || status=1
echo "== tests, ASan+UBSan build =="
ctest --test-dir build-asan --output-on-failure -j2 || status=1
# Every libFuzzer target for a bounded time under ASan+UBSan (clang), starting
# from the seed corpus in tests/fuzz/corpus; UCGW_FUZZ_SECONDS=0 skips them.
secs=${UCGW_FUZZ_SECONDS:-20}
if [ "$secs" != 0 ]; then
	echo "== fuzzing, ${secs}s per target =="
	sh tests/fuzz/run.sh "$secs" || status=1
fi
[ $status = 0 ] && echo "ALL TESTS PASSED" || echo "SOME TESTS FAILED"
exit $status
