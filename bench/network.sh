#!/bin/sh
# Issue 3 benchmarks (networking), every peer in the same run on this machine:
#  1. `run --rm busybox true` on each engine's default bridge: wharf vs docker vs podman
#     (one hyperfine run; target: wharf median <= 25 ms and <= 0.05x docker).
#  2. 50 `run -d` started in parallel by 8 clients on one user network: total time, wharf vs
#     docker.
#  3. 1 GiB host -> container through a published port on 127.0.0.1 (receivers: busybox
#     `nc -l` writing to /dev/null, and a python3 reader), wharf vs docker.
# Each engine runs its own daemon on a temporary root; wharf on a bridge and subnets of its
# own (wbn0, 10.199.0.0/24; user networks from 10.198.0.0/16), docker on its default docker0.
# Traffic goes to 127.0.0.1 only. Needs root; builds wharf in release once.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh
command -v podman >/dev/null || { apt-get install -y -qq --no-install-recommends podman >/dev/null; }
cargo build --release --locked
WHARF=${CARGO_TARGET_DIR:-$(pwd)/target}/release/wharf
RUNS=${RUNS:-30}
PAR=${PAR:-50}
CLIENTS=${CLIENTS:-8}
work=$(mktemp -d /tmp/wharf-bench.XXXXXX)
export WHARF_ROOT=$work/wharf/root WHARF_RUN=$work/wharf/run
DOCKER_SOCK=$work/docker/d.sock
DOCKER="docker -H unix://$DOCKER_SOCK"
PODMAN="podman --root $work/podman/root --runroot $work/podman/run --cgroup-manager cgroupfs --events-backend none --runtime runc"
# Podman's default ulimits exceed this host's hard limits (no CAP_SYS_RESOURCE): none.
printf '[containers]\ndefault_ulimits = []\n' > "$work/containers.conf"
export CONTAINERS_CONF=$work/containers.conf
had_docker0=$(ip link show docker0 >/dev/null 2>&1 && echo yes || echo no)
had_cni=$(ip link show cni-podman0 >/dev/null 2>&1 && echo yes || echo no)

cleanup() {
  set +e
  "$WHARF" rm -f $("$WHARF" ps -aq) >/dev/null 2>&1
  "$WHARF" network rm bnet >/dev/null 2>&1
  [ -f "$work/wharf/pid" ] && kill "$(cat "$work/wharf/pid")"
  $DOCKER rm -f $($DOCKER ps -aq) >/dev/null 2>&1
  $DOCKER network rm bnet >/dev/null 2>&1
  [ -f "$work/docker/pid" ] && kill "$(cat "$work/docker/pid")"
  $PODMAN rm -af >/dev/null 2>&1
  sleep 3
  if [ "$had_docker0" = no ]; then
    # What this run's dockerd added for its bridges; its empty DOCKER* chains stay.
    for t in nat filter; do
      iptables-save -t "$t" | grep -E '^-A .*(docker0|br-[0-9a-f]{12})' | sed 's/^-A //' |
        while read -r rule; do eval "iptables -w -t $t -D $rule"; done
    done
    ip link del docker0 2>/dev/null
  fi
  # Podman's CNI bridge (its empty CNI-* chains stay).
  [ "$had_cni" = no ] && ip link del cni-podman0 2>/dev/null
  grep "$work" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l
  rm -rf "$work"
}
trap cleanup EXIT

scripts/mkbusybox.sh "$work/busybox.tar"

# wharf
mkdir -p "$work/wharf"
"$WHARF" daemon --root "$WHARF_ROOT" --run-root "$WHARF_RUN" --bridge wbn0 --bip 10.199.0.1/24 \
  --default-address-pool base=10.198.0.0/16,size=24 >"$work/wharf/log" 2>&1 &
echo $! > "$work/wharf/pid"
for _ in $(seq 100); do [ -S "$WHARF_RUN/wharf.sock" ] && break; sleep 0.1; done
"$WHARF" import --change 'CMD ["sh"]' "$work/busybox.tar" busybox:latest >/dev/null
"$WHARF" run --rm busybox true

# docker: its own daemon on a temporary root, its default bridge and iptables
mkdir -p "$work/docker"
dockerd --data-root "$work/docker/data" --exec-root "$work/docker/exec" -H "unix://$DOCKER_SOCK" \
  --pidfile "$work/docker/pid" >"$work/docker/log" 2>&1 &
for _ in $(seq 100); do [ -S "$DOCKER_SOCK" ] && break; sleep 0.1; done
$DOCKER import --change 'CMD ["sh"]' "$work/busybox.tar" busybox:latest >/dev/null
$DOCKER run --rm busybox true

# podman (its default network: CNI bridge on 10.88.0.0/16)
$PODMAN import --change 'CMD ["sh"]' "$work/busybox.tar" busybox:latest >/dev/null
$PODMAN run --rm busybox true

echo "== run --rm busybox true, default bridge ($RUNS runs each)"
hyperfine -N ${HYPERFINE_OPTS:-} --warmup 3 --runs "$RUNS" --export-json "$work/bridge.json" \
  -n wharf "$WHARF run --rm busybox true" \
  -n docker "$DOCKER run --rm busybox true" \
  -n podman "$PODMAN run --rm busybox true"
python3 - "$work/bridge.json" <<'PY'
import json, sys
r = {x["command"]: x["median"] for x in json.load(open(sys.argv[1]))["results"]}
w = r["wharf"]
print(f"median: wharf {w*1000:.1f} ms (target <= 25), docker {r['docker']*1000:.1f} ms, podman {r['podman']*1000:.1f} ms")
print(f"ratio wharf/docker {w/r['docker']:.3f} (target <= 0.05), wharf/podman {w/r['podman']:.3f}")
PY

echo "== $PAR containers started in parallel by $CLIENTS clients on one user network"
"$WHARF" network create bnet >/dev/null
$DOCKER network create bnet >/dev/null
par() { # engine command...
  t0=$(date +%s.%N)
  seq "$PAR" | xargs -P "$CLIENTS" -I{} sh -c "$* run -d --network bnet busybox sleep 1000 >/dev/null"
  t1=$(date +%s.%N)
  python3 -c "print(f'{$t1-$t0:.3f}')"
}
tw=$(par "$WHARF")
nw=$("$WHARF" ps -q | wc -l)
td=$(par "$DOCKER")
nd=$($DOCKER ps -q | wc -l)
python3 -c "print(f'wharf {$tw:.3f} s ($nw running), docker {$td:.3f} s ($nd running), ratio {$tw/$td:.3f}')"
"$WHARF" rm -f $("$WHARF" ps -aq) >/dev/null
$DOCKER rm -f $($DOCKER ps -aq) >/dev/null

echo "== 1 GiB host -> container through a published port on 127.0.0.1"
# The sender writes 1 GiB, half-closes, and waits for the receiver to close: the time
# covers every byte having arrived in the container.
cat > "$work/send.py" <<'PY'
import socket, sys, time
port, total = int(sys.argv[1]), 1 << 30
chunk = b"\0" * (1 << 20)
s = socket.create_connection(("127.0.0.1", port))
t0 = time.monotonic()
for _ in range(total // len(chunk)):
    s.sendall(chunk)
s.shutdown(socket.SHUT_WR)
while s.recv(65536):
    pass
dt = time.monotonic() - t0
print(f"{dt:.3f} {total / dt / 1e6:.0f}")
PY
# Receivers in the container: busybox nc (small reads: an application-bound baseline), and
# the host's python3 (mounted read-only) reading 1 MiB at a time, which leaves the path as
# the limit.
cat > "$work/recv.py" <<'PY'
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5001))
s.listen(4)
buf = bytearray(1 << 20)
while True:
    c, _ = s.accept()
    while c.recv_into(buf):
        pass
    c.close()
PY
HOSTPY="-v /usr:/usr:ro -v /usr/lib:/lib:ro -v /usr/lib64:/lib64:ro -v $work/recv.py:/recv.py:ro"
tput() { # engine port receiver...
  e=$1 port=$2
  shift 2
  c=$($e run -d -p "127.0.0.1:$port:5001" "$@")
  for _ in $(seq 100); do
    $e exec "$c" /bin/busybox netstat -ltn 2>/dev/null | grep -q ':5001 ' && break; sleep 0.1
  done
  for i in 1 2 3; do python3 "$work/send.py" "$port"; done
  $e rm -f "$c" >/dev/null
}
for engine in wharf docker; do
  [ $engine = wharf ] && e=$WHARF p=18461 || { e=$DOCKER; p=18462; }
  echo "$engine, busybox nc receiver (seconds, MB/s; 3 transfers):"
  tput "$e" $p busybox sh -c 'while true; do nc -l -p 5001 >/dev/null; done'
  echo "$engine, python receiver (seconds, MB/s; 3 transfers):"
  tput "$e" $((p + 2)) $HOSTPY busybox /usr/bin/python3 /recv.py
done
