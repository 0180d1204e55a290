#!/usr/bin/env bash
# The build stage of the Dockerfile, as a script CI can run too: builds the tessera binary and
# assembles the root filesystem of the runtime image in ROOTFS:
#
#   /usr/local/bin/tessera   the server
#   /lib..., /lib64/...      the shared libraries it links (glibc, libgcc_s), found by ldd
#   /bin/busybox             static, for the HEALTHCHECK's `wget` (and `podman exec` debugging)
#   /etc/passwd, /etc/group  root, and the user `tessera` (uid and gid 10001) it runs as
#   /data                    the volume for the SQLite file, owned by tessera, mode 0700
#   /tmp                     mode 1777
#
# Usage: scripts/docker-build-stage.sh ROOTFS
# PROFILE=release (default) or dev (reuses the debug build: what CI checks the layout with).
# Needs cargo, ldd and a static busybox (Debian: busybox-static).
set -euo pipefail
cd "$(dirname "$0")/.."

rootfs="${1:?usage: $0 ROOTFS}"
profile="${PROFILE:-release}"
uid=10001

echo "== cargo build --profile $profile --bin tessera"
cargo build --locked --profile "$profile" --bin tessera
case "$profile" in
    dev) dir=debug ;;
    *) dir="$profile" ;;
esac
binary="${CARGO_TARGET_DIR:-target}/$dir/tessera"

echo "== root filesystem in $rootfs"
rm -rf "$rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/bin" "$rootfs/etc" "$rootfs/data" "$rootfs/tmp"
if [ "$profile" = dev ] && command -v objcopy >/dev/null 2>&1; then
    # The debug build's symbols are most of its size; the image does not need them.
    objcopy --strip-debug "$binary" "$rootfs/usr/local/bin/tessera"
else
    install -m 0755 "$binary" "$rootfs/usr/local/bin/tessera"
fi

# Every shared library the binary loads, at the path the dynamic loader looks for it.
ldd "$binary" | grep -oE '/[^ ]+' | while read -r lib; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
done

busybox="$(command -v busybox || true)"
if [ -z "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
    echo "FATAL: a static busybox is needed for the HEALTHCHECK (Debian: apt-get install busybox-static)" >&2
    exit 1
fi
install -m 0755 "$busybox" "$rootfs/bin/busybox"

cat >"$rootfs/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
tessera:x:$uid:$uid:tessera:/data:/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<EOF
root:x:0:
tessera:x:$uid:
EOF
chmod 0700 "$rootfs/data"
chmod 1777 "$rootfs/tmp"
if [ "$(id -u)" -eq 0 ]; then
    chown "$uid:$uid" "$rootfs/data"
else
    echo "note: not root, so /data is not chowned to $uid here (the Dockerfile's build stage is root)"
fi

echo "== the rootfs runs: $("$rootfs/usr/local/bin/tessera" --version)"
du -sh "$rootfs" | cut -f1 | sed 's/^/size: /'
