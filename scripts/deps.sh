#!/bin/sh
# deps.sh — make sure the Debian packages ramole builds with are present.
# As root it installs what is missing; otherwise it prints the apt-get line
# to run and exits 1. `deps.sh fuzz` also wants clang and libFuzzer (make fuzz);
# `deps.sh web` Node.js, npm and Chromium, for the tests that run the OpenAI SDK
# and the server's page in a headless browser (they skip without them).
# `deps.sh test` also postgresql-15 and nginx: the replicated deployment's tests
# start their own instances (tests/test_cluster.c, scripts/cluster.sh; curl and
# jq for the latter).
PKGS="build-essential libsqlite3-dev pkg-config libpcre2-dev libutf8proc-dev libmicrohttpd-dev libpq-dev"
[ "$1" = test ] && PKGS="$PKGS postgresql-15 nginx curl jq"
[ "$1" = fuzz ] && PKGS="$PKGS clang libclang-rt-14-dev"
if [ "$1" = web ]; then
    PKGS="$PKGS chromium"
    # a Node.js from elsewhere (NodeSource) brings its own npm: Debian's would clash with it
    command -v node >/dev/null && command -v npm >/dev/null || PKGS="$PKGS nodejs npm"
fi
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    echo "deps: installing$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq $missing >&2 || { echo "deps: apt-get failed" >&2; exit 1; }
else
    echo "ramole needs these Debian packages:$missing" >&2
    echo "run:  sudo apt-get install -y$missing" >&2
    exit 1
fi
