#!/bin/sh
# Issue 2 benchmarks, every peer in the same run on this machine:
#  1. `run --rm busybox true` (no network): wharf vs bare `runc run` of the same rootfs vs
#     `docker run --rm --network none` vs `podman run --rm --network none` (hyperfine).
#  2. 20 sequential `run -d busybox sleep 1000`: total time (wharf, docker).
#  3. RSS of one idle shim and of the idle daemon.
# Prints ratios; record them in bench/RESULTS.md. Needs root; builds wharf in release.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh
command -v podman >/dev/null || { apt-get install -y -qq --no-install-recommends podman >/dev/null; }
# NO_BUILD=1: measure the release binaries already built.
[ -n "${NO_BUILD:-}" ] || cargo build --release --locked
WHARF=$(pwd)/target/release/wharf
RUNS=${RUNS:-30}
work=$(mktemp -d /tmp/wharf-bench.XXXXXX)
export WHARF_ROOT=$work/wharf/root WHARF_RUN=$work/wharf/run
DOCKER_SOCK=$work/docker/d.sock
PODMAN="podman --root $work/podman/root --runroot $work/podman/run --cgroup-manager cgroupfs --events-backend none --runtime runc"
# Podman's default ulimits exceed this host's hard limits (no CAP_SYS_RESOURCE): none.
printf '[containers]\ndefault_ulimits = []\n' > "$work/containers.conf"
export CONTAINERS_CONF=$work/containers.conf

cleanup() {
  set +e
  "$WHARF" rm -f $("$WHARF" ps -aq) >/dev/null 2>&1
  [ -f "$WHARF_RUN/wharf.pid" ] && kill "$(cat "$WHARF_RUN/wharf.pid")"
  DOCKER_HOST=unix://$DOCKER_SOCK docker rm -f $(DOCKER_HOST=unix://$DOCKER_SOCK docker ps -aq) >/dev/null 2>&1
  [ -f "$work/docker/pid" ] && kill "$(cat "$work/docker/pid")"
  $PODMAN rm -af >/dev/null 2>&1
  sleep 2
  grep "$work" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l
  rm -rf "$work"
}
trap cleanup EXIT

scripts/mkbusybox.sh "$work/busybox.tar"

# wharf
"$WHARF" import --change 'CMD ["sh"]' "$work/busybox.tar" busybox:latest >/dev/null
"$WHARF" run --rm --network none busybox true

# runc: a bare bundle of the same rootfs
mkdir -p "$work/bundle/rootfs"
tar -C "$work/bundle/rootfs" -xf "$work/busybox.tar"
(cd "$work/bundle" && runc spec && sed -i 's/"terminal": true/"terminal": false/; s/"sh"/"true"/' config.json)

# docker: its own daemon on a temporary root
mkdir -p "$work/docker"
dockerd --data-root "$work/docker/data" --exec-root "$work/docker/exec" -H "unix://$DOCKER_SOCK" \
  --pidfile "$work/docker/pid" --bridge none --iptables=false >"$work/docker/log" 2>&1 &
for _ in $(seq 100); do [ -S "$DOCKER_SOCK" ] && break; sleep 0.1; done
DOCKER="docker -H unix://$DOCKER_SOCK"
$DOCKER import --change 'CMD ["sh"]' "$work/busybox.tar" busybox:latest >/dev/null
$DOCKER run --rm --network none busybox true

# podman
$PODMAN import --change 'CMD ["sh"]' "$work/busybox.tar" busybox:latest >/dev/null
$PODMAN run --rm --network none busybox true

echo "== run --rm busybox true ($RUNS runs each)"
hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$work/startup.json" \
  -n wharf "$WHARF run --rm --network none busybox true" \
  -n runc "runc --root $work/runc run --bundle $work/bundle wharf-bench" \
  -n docker "$DOCKER run --rm --network none busybox true" \
  -n podman "$PODMAN run --rm --network none busybox true"
python3 - "$work/startup.json" <<'PY'
import json, sys
r = {x["command"]: x["median"] for x in json.load(open(sys.argv[1]))["results"]}
w = r["wharf"]
print(f"median: wharf {w*1000:.1f} ms, runc {r['runc']*1000:.1f} ms, docker {r['docker']*1000:.1f} ms, podman {r['podman']*1000:.1f} ms")
print(f"ratio wharf/runc {w/r['runc']:.2f} (target <= 0.7), wharf/docker {w/r['docker']:.3f} (target <= 0.05), wharf/podman {w/r['podman']:.3f}")
PY

echo "== 20 sequential run -d busybox sleep 1000"
t0=$(date +%s.%N)
for i in $(seq 20); do "$WHARF" run -d --network none busybox sleep 1000 >/dev/null; done
t1=$(date +%s.%N)
for i in $(seq 20); do $DOCKER run -d --network none busybox sleep 1000 >/dev/null; done
t2=$(date +%s.%N)
python3 -c "w=$t1-$t0; d=$t2-$t1; print(f'wharf {w:.3f} s (target <= 0.5 s), docker {d:.3f} s, ratio {w/d:.3f}')"

echo "== memory"
daemon=$(cat "$WHARF_RUN/wharf.pid")
"$WHARF" rm -f $("$WHARF" ps -aq) >/dev/null
sleep 1
cid=$("$WHARF" run -d --network none busybox sleep 1000)
# An idle shim gives memory back after 250 ms.
sleep 1
# The container's shim is its init's parent (a spare shim's command line names no container).
shim=$(ps -o ppid= -p "$("$WHARF" inspect -f '{{.State.Pid}}' "$cid")" | tr -d ' ')
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
anon() { awk '/^RssAnon/ {print $2}' "/proc/$1/status"; }
pss() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
echo "shim RSS $(rss "$shim") KiB (anonymous $(anon "$shim") KiB, PSS $(pss "$shim") KiB; target <= 1024)"
echo "daemon idle RSS $(rss "$daemon") KiB (anonymous $(anon "$daemon") KiB; target <= 20480)"
