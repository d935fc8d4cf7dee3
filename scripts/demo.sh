#!/bin/sh
# The demo: build wharf, make a busybox image, run a web server in a container, curl it.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release --locked
wharf=$(pwd)/target/release/wharf
work=$(mktemp -d)
export WHARF_ROOT="$work/root" WHARF_RUN="$work/run"
cleanup() {
  "$wharf" rm -f wharf-demo >/dev/null 2>&1 || true
  [ -f "$WHARF_RUN/wharf.pid" ] && kill "$(cat "$WHARF_RUN/wharf.pid")" 2>/dev/null || true
  sleep 0.2
  rm -rf "$work"
}
trap cleanup EXIT
scripts/mkbusybox.sh "$work/busybox.tar"
"$wharf" import --change 'CMD ["sh"]' "$work/busybox.tar" busybox:latest
"$wharf" run -d --name wharf-demo --network host busybox httpd -f -p 127.0.0.1:18080 -h /var/www
sleep 0.3
curl -fsS http://127.0.0.1:18080/
