#!/usr/bin/env bash
# Pull and push of the "big" image (busybox plus a copy of /usr/lib/python3* as a second
# layer) against Debian's docker-registry on loopback, in one hyperfine run each:
#   pull on a clean root: wharf vs `skopeo copy` to an OCI dir (download only: the floor)
#                         vs `docker pull` (Docker's own daemon on a temporary root)
#   push to an empty registry: wharf vs `docker push`
#
# TODO(daemon wiring): wharf is timed through the engine's bench driver (the ignored test in
# crates/engine/tests/distribution_bench.rs: the same pull/push code the daemon will call).
# Once `POST /images/create` and `POST /images/{name}/push` are wired, time `wharf pull` and
# `wharf push` (the CLI against a daemon on a temporary root) instead, and add `docker pull` /
# `docker push` with DOCKER_HOST pointed at the wharf daemon.
#
# Usage: bench/pull-push.sh
#   WHARF_BENCH_PROFILE=debug   time a debug build (only to check the script; numbers are
#                               meaningless); the default builds the driver with --release
#   WHARF_BENCH_RUNS=N          hyperfine runs per command (default 5)
#   WHARF_BENCH_NO_DOCKER=1     leave Docker out
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
runs=${WHARF_BENCH_RUNS:-5}
profile=${WHARF_BENCH_PROFILE:-release}

# Internal: hyperfine's --prepare for the push runs (an empty registry each time).
if [ "${1:-}" = "__reset" ]; then
  work=$2
  if [ -f "$work/registry.pid" ]; then
    kill "$(cat "$work/registry.pid")" 2>/dev/null || true
    while kill -0 "$(cat "$work/registry.pid")" 2>/dev/null; do sleep 0.05; done
  fi
  rm -rf "$work/storage" "$work/pushroot/distribution/metadata.json"
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
  if [ -n "${dockerd_pid:-}" ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
  fi
  umount -R "$work/docker/data" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building the bench driver ($profile)"
flag=
[ "$profile" = release ] && flag=--release
driver=$(cd "$repo" && cargo test -p wharf-engine --test distribution_bench $flag --no-run 2>&1 |
  sed -n 's/.*Executable .*(\(.*distribution_bench-[0-9a-f]*\)).*/\1/p' | tail -1)
[ -n "$driver" ] || { echo "pull-push: could not build the driver" >&2; exit 1; }
driver="$repo/$driver"
wharf() { # op root ref [archive]
  WHARF_BENCH_OP=$1 WHARF_BENCH_ROOT=$2 WHARF_BENCH_REF=${3:-} WHARF_BENCH_ARCHIVE=${4:-} \
    "$driver" --ignored --exact bench_driver --test-threads 1 -q --nocapture
}

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
mkdir -p "$work/bundle/rootfs/usr/lib"
cp -a /usr/lib/python3* "$work/bundle/rootfs/usr/lib/"
umoci repack --image "$work/oci:big" "$work/bundle"
rm -rf "$work/bundle"
umoci config --image "$work/oci:big" --config.cmd sh
du -sh "$work/oci" | sed 's/^/   compressed layout: /'
skopeo copy -q --dest-tls-verify=false "oci:$work/oci:big" "docker://$reg/big:latest"
# The same image uncompressed, for the push runs (a push compresses it, as docker's does).
skopeo copy -q "oci:$work/oci:big" "docker-archive:$work/big.tar:$reg/big:latest"
wharf load "$work/pushroot" "" "$work/big.tar" >/dev/null

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
args=(--runs "$runs" --export-markdown "$work/pull.md"
  --prepare "rm -rf $work/wroot"
  -n "wharf pull (engine driver)"
  "WHARF_BENCH_OP=pull WHARF_BENCH_ROOT=$work/wroot WHARF_BENCH_REF=$reg/big:latest $driver --ignored --exact bench_driver --test-threads 1 -q"
  --prepare "rm -rf $work/skopeo-out"
  -n "skopeo copy to an OCI dir (download only)"
  "skopeo copy -q --src-tls-verify=false docker://$reg/big:latest oci:$work/skopeo-out:big")
if [ -n "$dk" ]; then
  args+=(--prepare "$dk rmi -f $reg/big:latest >/dev/null 2>&1; $dk image prune -af >/dev/null 2>&1; true"
    -n "docker pull" "$dk pull -q $reg/big:latest")
fi
hyperfine "${args[@]}"

echo "== push to an empty registry"
args=(--runs "$runs" --export-markdown "$work/push.md"
  --prepare "$0 __reset $work"
  -n "wharf push (engine driver)"
  "WHARF_BENCH_OP=push WHARF_BENCH_ROOT=$work/pushroot WHARF_BENCH_REF=$reg/big:latest $driver --ignored --exact bench_driver --test-threads 1 -q")
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
