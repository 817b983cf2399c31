#!/bin/sh
# Install what ucgw needs (as root on Debian 12), build it, and run the demo:
# local servers, the gateway with all five protocols, sample detections and an image.
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] && [ -z "${UCGW_SKIP_DEPS:-}" ] && sh packaging/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
exec /usr/bin/python3 tests/demo.py
