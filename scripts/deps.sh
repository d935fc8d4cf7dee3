#!/bin/sh
# Installs the Debian packages that building and testing wharf need (no-op when present).
set -eu
pkgs="libseccomp-dev libelf-dev zlib1g-dev pkg-config busybox-static curl iproute2 procps
      nftables iptables docker.io runc skopeo umoci tini docker-registry apache2-utils openssl util-linux"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "installing:$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
if ! python3 -c 'import docker' 2>/dev/null; then
  pip install -q 'docker>=7,<8'
fi
