#!/usr/bin/env bash
# Pull and push of the "big" image (busybox plus a copy of /usr/lib/python3* as a second
# layer) against Debian's docker-registry on loopback, in one hyperfine run each:
#   pull on a clean root: `wharf pull` (the CLI through a wharf daemon on a fresh temporary
#                         root) vs `skopeo copy` to an OCI dir (download only: the floor)
#                         vs `docker pull` (Docker's own daemon on a temporary root)
#   push to an empty registry: `wharf push` (through its daemon, which forgets what it
#                         pushed before each run) vs `docker push` (through its own daemon)
#
# Usage: bench/pull-push.sh
#   WHARF_BENCH_PROFILE=debug   time a debug build (only to check the script; numbers are
#                               meaningless); the default builds wharf with --release
#   WHARF_BENCH_RUNS=N          hyperfine runs per command (default 5)
#   WHARF_BENCH_NO_DOCKER=1     leave Docker out
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
runs=${WHARF_BENCH_RUNS:-5}
profile=${WHARF_BENCH_PROFILE:-release}

# Internal: (re)starts the wharf daemon of root $3 / run dir $4 with binary $2; with $5 =
# clean its root is emptied first, with $5 = forget it keeps images but forgets which
# registries hold which blobs (so a push uploads everything again).
if [ "${1:-}" = "__wharfd" ]; then
  bin=$2 root=$3 run=$4 mode=${5:-}
  if [ -f "$run/wharf.pid" ]; then
    pid=$(cat "$run/wharf.pid")
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
  fi
  case $mode in
    # Moved aside, not deleted: ext4 skips inodes freed in the last seconds when it
    # allocates new ones, so deleting the last run's 54k files right before the next run
    # made that run's unpack scan inode tables (6 s vs 46 s for the same pull).
    clean) [ -d "$root" ] && mv "$root" "$root.old.$$.$RANDOM" ;;
    forget) rm -f "$root/distribution/metadata.json" ;;
  esac
  mkdir -p "$root" "$run"
  setsid "$bin" daemon --root "$root" --run-root "$run" --bridge wbench0 --bip 10.198.0.1/24 \
    >>"$run/../daemon.log" 2>&1 </dev/null &
  until "$bin" -H "unix://$run/wharf.sock" version >/dev/null 2>&1; do sleep 0.02; done
  exit 0
fi

# Internal: hyperfine's --prepare for the push runs (an empty registry each time).
if [ "${1:-}" = "__reset" ]; then
  work=$2
  if [ -f "$work/registry.pid" ]; then
    kill "$(cat "$work/registry.pid")" 2>/dev/null || true
    while kill -0 "$(cat "$work/registry.pid")" 2>/dev/null; do sleep 0.05; done
  fi
  rm -rf "$work/storage"
  mkdir -p "$work/storage"
  docker-registry serve "$work/registry.yml" >>"$work/registry.log" 2>&1 &
  echo $! >"$work/registry.pid"
  until (exec 3<>"/dev/tcp/127.0.0.1/$(cat "$work/port")") 2>/dev/null; do sleep 0.05; done
  exit 0
fi

for tool in hyperfine skopeo umoci docker-registry python3; do
  command -v "$tool" >/dev/null || { echo "pull-push: $tool is needed" >&2; exit 1; }
done
docker_too=1
if [ -n "${WHARF_BENCH_NO_DOCKER:-}" ] || ! command -v dockerd >/dev/null; then docker_too=; fi

work=$(mktemp -d /tmp/wharf-bench.XXXXXX)
cleanup() {
  [ -f "$work/registry.pid" ] && kill "$(cat "$work/registry.pid")" 2>/dev/null || true
  for run in "$work/wpull/run" "$work/wpush/run"; do
    [ -f "$run/wharf.pid" ] && kill "$(cat "$run/wharf.pid")" 2>/dev/null || true
  done
  if [ -n "${dockerd_pid:-}" ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
  fi
  umount -R "$work/docker/data" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building wharf ($profile)"
flag=
[ "$profile" = release ] && flag=--release
(cd "$repo" && cargo build --locked $flag -q)
bin="${CARGO_TARGET_DIR:-$repo/target}/$profile/wharf"
[ -x "$bin" ] || { echo "pull-push: no wharf binary at $bin" >&2; exit 1; }
wpull="$bin -H unix://$work/wpull/run/wharf.sock"
wpush="$bin -H unix://$work/wpush/run/wharf.sock"

echo "== starting docker-registry"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "$port" >"$work/port"
cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/storage
http:
  addr: 127.0.0.1:$port
EOF
reg=127.0.0.1:$port
"$0" __reset "$work"

echo "== building the big image"
"$repo/scripts/mkbusybox.sh" "$work/busybox.tar"
umoci init --layout "$work/oci"
umoci new --image "$work/oci:big"
umoci unpack --image "$work/oci:big" "$work/bundle" >/dev/null
tar -xf "$work/busybox.tar" -C "$work/bundle/rootfs"
umoci repack --image "$work/oci:big" "$work/bundle"
rm -rf "$work/bundle"
umoci unpack --image "$work/oci:big" "$work/bundle" >/dev/null
# This machine's Python library is ~100 MB / ~5k files: six copies of it, topped up with
# small modules to ~54k files, make the issue's ~600 MB / ~54k-file tree.
mkdir -p "$work/bundle/rootfs/usr/lib/py"
for i in 1 2 3 4 5 6; do
  for p in /usr/lib/python3*; do
    [ -d "$p" ] && cp -a "$p" "$work/bundle/rootfs/usr/lib/py/$(basename "$p")-$i"
  done
done
python3 - "$work/bundle/rootfs/usr/lib/py/generated" <<'PY'
import os, sys
root = sys.argv[1]
have = sum(len(f) + len(d) for _, d, f in os.walk(os.path.dirname(root)))
for n in range(max(0, 54000 - have)):
    d = os.path.join(root, f"pkg{n // 100:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"mod{n % 100:02d}.py"), "w") as f:
        f.write(f"# generated module {n}\nVALUE = {n}\n" + "x = 1\n" * 80)
PY
echo "   tree: $(find "$work/bundle/rootfs" | wc -l) entries, $(du -sm "$work/bundle/rootfs" | cut -f1) MiB"
umoci repack --image "$work/oci:big" "$work/bundle"
rm -rf "$work/bundle"
umoci config --image "$work/oci:big" --config.cmd sh
du -sh "$work/oci" | sed 's/^/   compressed layout: /'
skopeo copy -q --dest-tls-verify=false "oci:$work/oci:big" "docker://$reg/big:latest"
# The same image uncompressed, for the push runs (a push compresses it, as docker's does).
skopeo copy -q "oci:$work/oci:big" "docker-archive:$work/big.tar:$reg/big:latest"
"$0" __wharfd "$bin" "$work/wpush/root" "$work/wpush/run" clean
$wpush load -q -i "$work/big.tar" >/dev/null

dk=
if [ -n "$docker_too" ]; then
  echo "== starting dockerd on a temporary root"
  dockerd --data-root "$work/docker/data" --exec-root "$work/docker/exec" \
    -H "unix://$work/docker.sock" --pidfile "$work/docker/dockerd.pid" \
    --bridge none --iptables=false --ip6tables=false >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  dk="docker -H unix://$work/docker.sock"
  for _ in $(seq 300); do $dk version >/dev/null 2>&1 && break; sleep 0.1; done
  $dk version >/dev/null
fi

echo "== pull from the local registry on a clean root"
args=(--runs "$runs" --export-markdown "$work/pull.md" --export-json "$work/pull.json"
  --prepare "$0 __wharfd $bin $work/wpull/root $work/wpull/run clean"
  -n "wharf pull" "$wpull pull -q $reg/big:latest"
  --prepare "rm -rf $work/skopeo-out"
  -n "skopeo copy to an OCI dir (download only)"
  "skopeo copy -q --src-tls-verify=false docker://$reg/big:latest oci:$work/skopeo-out:big")
if [ -n "$dk" ]; then
  args+=(--prepare "$dk rmi -f $reg/big:latest >/dev/null 2>&1; $dk image prune -af >/dev/null 2>&1; true"
    -n "docker pull" "$dk pull -q $reg/big:latest")
fi
hyperfine "${args[@]}"

echo "== push to an empty registry"
args=(--runs "$runs" --export-markdown "$work/push.md" --export-json "$work/push.json"
  --prepare "$0 __reset $work; $0 __wharfd $bin $work/wpush/root $work/wpush/run forget"
  -n "wharf push" "$wpush push -q $reg/big:latest")
if [ -n "$dk" ]; then
  $dk pull -q "$reg/big:latest" >/dev/null
  args+=(--prepare "$0 __reset $work" -n "docker push" "$dk push -q $reg/big:latest")
fi
hyperfine "${args[@]}"

echo
echo "## pull"
cat "$work/pull.md"
echo
echo "## push"
cat "$work/push.md"
echo
python3 - "$work/pull.json" "$work/push.json" <<'PY'
import json, sys
def medians(path):
    return {r["command"]: r["median"] for r in json.load(open(path))["results"]}
pull, push = medians(sys.argv[1]), medians(sys.argv[2])
w = pull["wharf pull"]
s = pull["skopeo copy to an OCI dir (download only)"]
print(f"pull (median): wharf {w:.2f} s, skopeo download-only {s:.2f} s, ratio {w/s:.2f} (target <= 2)")
if "docker pull" in pull:
    d = pull["docker pull"]
    print(f"pull (median): docker {d:.2f} s, wharf/docker {w/d:.3f} (target <= 0.1)")
wp = push["wharf push"]
print(f"push (median): wharf {wp:.2f} s", end="")
if "docker push" in push:
    dp = push["docker push"]
    print(f", docker {dp:.2f} s, wharf/docker {wp/dp:.3f} (target <= 0.15)")
else:
    print()
PY
