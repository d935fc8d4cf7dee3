#!/bin/sh
# The demo: build wharf, make a busybox base image, build an app image from a Dockerfile,
# run it with a published port, and curl it. Cleans up after itself.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release --locked
wharf=$(pwd)/target/release/wharf
work=$(mktemp -d /tmp/wharf-demo.XXXXXX)
export WHARF_ROOT="$work/root" WHARF_RUN="$work/run"
cleanup() {
  "$wharf" rm -f wharf-demo >/dev/null 2>&1 || true
  [ -f "$WHARF_RUN/wharf.pid" ] && kill "$(cat "$WHARF_RUN/wharf.pid")" 2>/dev/null || true
  sleep 0.3
  grep "$work" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l
  rm -rf "$work"
}
trap cleanup EXIT

echo "== a busybox base image, from Debian's busybox-static"
scripts/mkbusybox.sh "$work/busybox.tar"
"$wharf" import --change 'CMD ["sh"]' "$work/busybox.tar" busybox:latest

echo "== build an image"
mkdir -p "$work/app"
echo '<h1>hello from wharf</h1>' > "$work/app/index.html"
cat > "$work/app/Dockerfile" <<'DOCKERFILE'
FROM busybox
COPY index.html /www/index.html
RUN echo "built at $(date -u)" > /www/built.txt
EXPOSE 80
CMD ["httpd", "-f", "-p", "80", "-h", "/www"]
DOCKERFILE
"$wharf" build -t wharf-demo:latest "$work/app"

echo "== run it with a published port"
"$wharf" run -d --name wharf-demo -p 127.0.0.1:18080:80 wharf-demo:latest
"$wharf" ps

echo "== curl it"
for _ in $(seq 50); do curl -fsS http://127.0.0.1:18080/ 2>/dev/null && break; sleep 0.1; done
curl -fsS http://127.0.0.1:18080/built.txt
