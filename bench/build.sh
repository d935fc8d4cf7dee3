#!/bin/sh
# Issue 5 benchmark: the Dockerfile `FROM busybox` + `COPY` of a ~700 MB / 54k-file Python
# library tree + `RUN` + `ENV` + `CMD`, built by wharf and by `DOCKER_BUILDKIT=0 docker build`
# (Debian's dockerd on its own temporary root), in one run:
#  1. cold: a fresh root with only busybox in it (no build cache, no layers);
#  2. no-change rebuild (hyperfine).
# The context is copies of this machine's /usr/lib/python3* topped up with small files to
# ~54k files. Prints times and ratios; record them in bench/RESULTS.md. Needs root; builds
# wharf in release.
set -eu
cd "$(dirname "$0")/.."
cargo build --release --locked
WHARF=${CARGO_TARGET_DIR:-$(pwd)/target}/release/wharf
REBUILDS=${REBUILDS:-10}
DOCKER_REBUILDS=${DOCKER_REBUILDS:-3}
work=$(mktemp -d /tmp/wharf-bench-build.XXXXXX)
export WHARF_ROOT=$work/wharf/root WHARF_RUN=$work/wharf/run
DOCKER_SOCK=$work/docker/d.sock
DOCKER="docker -H unix://$DOCKER_SOCK"

stop_daemons() {
  [ -f "$WHARF_RUN/wharf.pid" ] && kill "$(cat "$WHARF_RUN/wharf.pid")" 2>/dev/null
  [ -f "$work/docker/pid" ] && kill "$(cat "$work/docker/pid")" 2>/dev/null
  for _ in $(seq 100); do
    [ -S "$WHARF_RUN/wharf.sock" ] || [ -S "$DOCKER_SOCK" ] || break
    sleep 0.1
  done
  true
}

cleanup() {
  set +e
  stop_daemons
  sleep 1
  grep "$work" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l
  rm -rf "$work"
}
trap cleanup EXIT

# The context.
ctx=$work/ctx
mkdir -p "$ctx/lib"
for i in 1 2 3 4 5 6 7; do
  for p in /usr/lib/python3*; do
    [ -d "$p" ] && cp -a "$p" "$ctx/lib/$(basename "$p")-$i"
  done
done
python3 - "$ctx/lib/generated" <<'PY'
import os, sys
root = sys.argv[1]
have = sum(len(f) + len(d) for _, d, f in os.walk(os.path.dirname(root)))
want = max(0, 54000 - have)
for n in range(want):
    d = os.path.join(root, f"pkg{n // 100:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"mod{n % 100:02d}.py"), "w") as f:
        f.write(f"# generated module {n}\nVALUE = {n}\n" + "x = 1\n" * 80)
PY
cat > "$ctx/Dockerfile" <<'EOF'
FROM busybox
COPY lib /opt/lib
RUN find /opt/lib -type f | wc -l > /opt/count
ENV PYTHONPATH=/opt/lib
CMD ["cat", "/opt/count"]
EOF
files=$(find "$ctx" | wc -l)
size=$(du -sm "$ctx" | cut -f1)
echo "context: $files entries, $size MiB"
warm() { tar -C "$ctx" -cf - . >/dev/null; }

scripts/mkbusybox.sh "$work/busybox.tar"

start_wharf() {
  "$WHARF" daemon --bridge wbench1 --bip 10.199.0.1/24 >"$work/wharf.log" 2>&1 &
  for _ in $(seq 100); do [ -S "$WHARF_RUN/wharf.sock" ] && break; sleep 0.1; done
}
start_docker() {
  mkdir -p "$work/docker"
  dockerd --data-root "$work/docker/data" --exec-root "$work/docker/exec" -H "unix://$DOCKER_SOCK" \
    --pidfile "$work/docker/pid" --bridge none --iptables=false >"$work/docker/log" 2>&1 &
  for _ in $(seq 100); do [ -S "$DOCKER_SOCK" ] && break; sleep 0.1; done
}
now() { date +%s.%N; }

start_wharf
"$WHARF" import --change 'CMD ["sh"]' "$work/busybox.tar" busybox:latest >/dev/null
start_docker
$DOCKER import --change 'CMD ["sh"]' "$work/busybox.tar" busybox:latest >/dev/null

echo "== cold build"
warm
t0=$(now)
"$WHARF" build -q --network none -t bench "$ctx" >/dev/null
t1=$(now)
warm
t2=$(now)
DOCKER_BUILDKIT=0 $DOCKER build -q --network none -t bench "$ctx" >/dev/null 2>"$work/docker-build.err"
t3=$(now)
echo "wharf image: $("$WHARF" run --rm bench) files; docker image: $($DOCKER run --rm --network none bench) files"

echo "== no-change rebuild"
hyperfine -N --warmup 1 --runs "$REBUILDS" --export-json "$work/wharf.json" \
  -n wharf "$WHARF build -q --network none -t bench $ctx"
hyperfine -N --runs "$DOCKER_REBUILDS" --export-json "$work/docker.json" \
  -n docker "env DOCKER_BUILDKIT=0 $DOCKER build -q --network none -t bench $ctx"

python3 - "$t0" "$t1" "$t2" "$t3" "$work/wharf.json" "$work/docker.json" <<'PY'
import json, sys
t0, t1, t2, t3 = map(float, sys.argv[1:5])
w_cold, d_cold = t1 - t0, t3 - t2
w = json.load(open(sys.argv[5]))["results"][0]["median"]
d = json.load(open(sys.argv[6]))["results"][0]["median"]
print(f"cold: wharf {w_cold:.2f} s, docker {d_cold:.2f} s, ratio {w_cold/d_cold:.3f} (target <= 0.2)")
print(f"no-change rebuild (median): wharf {w:.3f} s (target <= 1 s), docker {d:.2f} s, ratio {w/d:.4f}")
PY
