#!/bin/sh
# Which system calls each worker makes once its seccomp filter is in (how the
# allow-lists in workers/sandbox.c were found, and how to update them when a
# library changes). Runs the given integration tests with every worker under
# `strace -f` and the filter in log-only mode (UCGW_SECCOMP_PERMISSIVE=1), then
# prints, per worker, the calls made after the filter was loaded (children
# such as rsync and ssh included), most frequent first.
#   tests/tools/sandbox-trace.sh build test_rest test_mqtt ...
set -eu
build=$(cd "$1" && pwd)
shift
src=$(cd "$(dirname "$0")/../.." && pwd)
out=$(mktemp -d /tmp/ucgw-trace-XXXXXX)
chmod 0777 "$out" # the workers run as nobody when the tests run as root
mkdir -p "$out/build/bin"
for f in "$build"/bin/*; do
	name=$(basename "$f")
	case $name in
	ucgw-load) ;;
	ucgw-*)
		printf '#!/bin/sh\nexec strace -f -qq -o %s/%s.$$ %s\n' "$out" "$name" "$f" >"$out/build/bin/$name"
		chmod 0755 "$out/build/bin/$name"
		continue ;;
	esac
	ln -s "$f" "$out/build/bin/$name"
done
ln -s "$build/lib" "$out/build/lib"
chmod -R a+rX "$out"
for t in "$@"; do
	UCGW_BUILD_DIR="$out/build" UCGW_SRC_DIR="$src" UCGW_SECCOMP_PERMISSIVE=1 \
		/usr/bin/python3 "$src/tests/integration/$t.py" >"$out/$t.log" 2>&1 || echo "($t failed under strace: $out/$t.log)"
done
for w in $(ls "$out" | sed -n 's/^\(ucgw-[a-z]*\)\..*/\1/p' | sort -u); do
	echo "== $w"
	awk '
		FNR == 1 { on = 0 }
		/seccomp\(SECCOMP_SET_MODE_FILTER.*\) = 0/ { on = 1; next }
		on && $2 ~ /^[a-z0-9_]+\(/ { c = $2; sub(/\(.*/, "", c); n[c]++ }
		END { for (c in n) printf "%8d %s\n", n[c], c }' "$out/$w".* | sort -rn
done
echo "(traces in $out)"
