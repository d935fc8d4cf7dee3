#!/bin/sh
# Make a busybox root file system tar from Debian's busybox-static, with no registry.
# Usage: scripts/mkbusybox.sh OUT.tar
# Then:  wharf import --change 'CMD ["sh"]' OUT.tar busybox:latest
set -eu
out=${1:?usage: mkbusybox.sh OUT.tar}
case $out in /*) ;; *) out=$(pwd)/$out ;; esac
bb=/bin/busybox
if ! [ -x "$bb" ] || ! "$bb" --list-full >/dev/null 2>&1; then
  echo "mkbusybox: $bb is missing or not busybox-static (apt-get install busybox-static)" >&2
  exit 1
fi
case $(file -b "$bb" 2>/dev/null || echo static) in
  *dynamic*) echo "mkbusybox: $bb is dynamically linked; install busybox-static" >&2; exit 1 ;;
esac
dir=$(mktemp -d)
chmod 755 "$dir"
trap 'rm -rf "$dir"' EXIT
cd "$dir"
mkdir -p bin sbin usr/bin usr/sbin etc root tmp home var/www dev proc sys
chmod 1777 tmp
chmod 700 root
cp "$bb" bin/busybox
"$bb" --list-full | while read -r applet; do
  [ "$applet" = bin/busybox ] && continue
  mkdir -p "$(dirname "$applet")"
  ln -sf /bin/busybox "$applet"
done
cat > etc/passwd <<'P'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
P
cat > etc/group <<'G'
root:x:0:
daemon:x:1:
nogroup:x:65534:
G
echo 'hello from wharf' > var/www/index.html
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$out.tmp" .
mv "$out.tmp" "$out"
