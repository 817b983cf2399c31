#!/bin/sh
# Build the libFuzzer targets with clang, ASan and UBSan into build-fuzz (every
# library instrumented for coverage), then run each for SECONDS (default 60),
# starting from its seed corpus in tests/fuzz/corpus/<target>/. New inputs go to
# build-fuzz/fuzz/corpus/<target>/, crashes to build-fuzz/fuzz/artifacts/<target>/.
# Prints executions per target and any crash; exits 1 when one crashed.
#
# usage: tests/fuzz/run.sh [SECONDS] [TARGET...]
#   UCGW_FUZZ_BUILD=DIR  build directory (default: build-fuzz next to the sources)
#   UCGW_FUZZ_ARGS=...   more libFuzzer flags (e.g. -jobs=2 -workers=2)
set -eu
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${UCGW_FUZZ_BUILD:-$SRC/build-fuzz}
SECS=${1:-60}
[ $# -gt 0 ] && shift
TARGETS=${*:-fuzz_msg fuzz_frame fuzz_control fuzz_config fuzz_jwt fuzz_crypto}

# -Wno-unknown-warning-option: the top-level -Wno-format-truncation is a GCC-only flag.
CC=clang cmake -S "$SRC" -B "$BUILD" -DUCGW_FUZZ=ON -DUCGW_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	-DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link -Wno-unknown-warning-option" >/dev/null
# shellcheck disable=SC2086
cmake --build "$BUILD" -j"$(nproc)" --target $TARGETS >/dev/null

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=0
summary=""
for t in $TARGETS; do
	work="$BUILD/fuzz/corpus/$t"
	art="$BUILD/fuzz/artifacts/$t"
	log="$BUILD/fuzz/$t.log"
	mkdir -p "$work" "$art"
	echo "== $t: ${SECS}s"
	# shellcheck disable=SC2086
	if "$BUILD/bin/$t" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$art/" ${UCGW_FUZZ_ARGS:-} "$work" "$SRC/tests/fuzz/corpus/$t" >"$log" 2>&1; then
		result="ok"
	else
		result="CRASH"
		failed=1
		grep -E "ERROR: |runtime error|SUMMARY|Test unit written|deadly signal|Timeout" "$log" | head -8 || true
	fi
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
	corpus=$(find "$work" -type f | wc -l)
	line=$(printf "%-14s %-6s %12s execs %8s/s  corpus %6s" "$t" "$result" "${execs:-?}" "${rate:-?}" "$corpus")
	echo "$line"
	summary="$summary$line
"
done
echo
echo "== summary (${SECS}s each; logs and crashes under $BUILD/fuzz)"
printf "%s" "$summary"
exit $failed
