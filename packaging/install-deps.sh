#!/bin/sh
# Install what building, testing and running ucgw needs on Debian 12 (as root).
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
	build-essential cmake pkg-config git ca-certificates \
	libuv1-dev libwebsockets-dev libcurl4-openssl-dev libmosquitto-dev libssh2-1-dev \
	libyaml-dev libmsgpack-dev libssl-dev libsystemd-dev libseccomp-dev zlib1g-dev libzstd-dev \
	mosquitto nginx-light openssh-server openssh-client rsync openssl procps lintian systemd btrfs-progs \
	python3 python3-msgpack python3-websockets python3-pycryptodome python3-yaml \
	python3-setuptools python3-pip mypy \
	clang libclang-rt-14-dev chromium >/dev/null
# The tests start their own servers on loopback: the packages' own services
# (nginx on port 80 of every interface, mosquitto on 1883) are not wanted.
for unit in nginx mosquitto; do
	systemctl disable --now "$unit" >/dev/null 2>&1 || true
done
# The browser tests drive Debian's chromium with playwright-core from npm: keep
# a Node.js that is already there (it may come from elsewhere, with its own npm).
command -v npm >/dev/null || apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
