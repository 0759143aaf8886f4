#!/usr/bin/env bash
# Provide kernel headers for BCC and mount tracefs, idempotently (run as root; scripts/bootstrap.sh
# calls it).
#
# The machines Baseliner targets may run a kernel without a headers package (here: a 6.18 firecracker
# kernel).  The sensor only uses tracepoints and raw tracepoints and never reads kernel structs, so it
# compiles against any recent header tree: this script fetches Debian's linux-headers-<ver>-amd64 and
# the matching -common package with `apt-get download`, unpacks both with `dpkg-deb -x` into one tree
# (the -amd64 package's relative symlinks then resolve into -common), and prints the directory to use
# as BCC_KERNEL_SOURCE.  The sensor looks at that default place by itself (sensor/probes.py), so no
# export is needed unless you put the tree elsewhere.
#
#   scripts/kernel_headers.sh   # -> BCC_KERNEL_SOURCE=/opt/baseliner/kernel-src/linux-headers-<ver>-amd64
#   BASELINER_KERNEL_SRC=/some/dir scripts/kernel_headers.sh
#
# If the running kernel has its own headers (/lib/modules/$(uname -r)/build), those are preferred by BCC
# and nothing is downloaded.
set -euo pipefail

DEST=${BASELINER_KERNEL_SRC:-/opt/baseliner/kernel-src}
log() { printf '[kernel_headers] %s\n' "$*" >&2; }

mount_tracefs() {
  if [[ ! -e /sys/kernel/tracing/events ]]; then
    log "mounting tracefs at /sys/kernel/tracing"
    mount -t tracefs nodev /sys/kernel/tracing
  fi
}

if [[ $(id -u) -ne 0 ]]; then
  log "must run as root (apt-get download, mount)"; exit 1
fi
mount_tracefs

if [[ -e /lib/modules/$(uname -r)/build/include ]]; then
  log "the running kernel has headers at /lib/modules/$(uname -r)/build; nothing to do"
  exit 0
fi

# An existing complete tree is reused (idempotent).
existing=$(find "$DEST" -maxdepth 1 -name 'linux-headers-*-amd64' -type d 2>/dev/null | sort | tail -n1 || true)
if [[ -n $existing && -e $existing/include/generated/autoconf.h && -e $existing/include/linux/types.h ]]; then
  log "headers already present"
  echo "BCC_KERNEL_SOURCE=$existing"
  exit 0
fi

# The headers that the linux-headers-amd64 metapackage currently points to (e.g. linux-headers-6.1.0-50-amd64).
arch_pkg=$(apt-cache depends linux-headers-amd64 2>/dev/null | awk '/Depends: linux-headers-[0-9].*-amd64$/ {print $2; exit}')
if [[ -z $arch_pkg ]]; then
  log "apt-get update (no linux-headers-amd64 candidate yet)"
  apt-get update -qq
  arch_pkg=$(apt-cache depends linux-headers-amd64 | awk '/Depends: linux-headers-[0-9].*-amd64$/ {print $2; exit}')
fi
[[ -n $arch_pkg ]] || { log "cannot find Debian's linux-headers-*-amd64 package"; exit 1; }
common_pkg=${arch_pkg%-amd64}-common
log "using $arch_pkg + $common_pkg"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -qq "$arch_pkg" "$common_pkg" >/dev/null 2>&1) || {
  apt-get update -qq
  (cd "$work" && apt-get download -qq "$arch_pkg" "$common_pkg" >/dev/null)
}
unpack="$work/unpack"
mkdir -p "$unpack"
for deb in "$work"/*.deb; do
  dpkg-deb -x "$deb" "$unpack"
done
# Merge: -common holds the generic headers, the -amd64 package the configured/generated parts
# (include/generated, arch/x86/include/generated, .config); -amd64 files win.
merged="$DEST.tmp/$arch_pkg"
rm -rf "$DEST.tmp"
mkdir -p "$merged"
cp -a "$unpack/usr/src/$common_pkg/." "$merged/"
cp -a "$unpack/usr/src/$arch_pkg/." "$merged/"
rm -f "$merged/scripts" "$merged/tools"   # dangling links to linux-kbuild; BCC does not need them
[[ -e $merged/include/generated/autoconf.h && -e $merged/include/linux/types.h ]] || {
  log "merged tree is incomplete: $merged"; exit 1;
}
rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$DEST.tmp" "$DEST"
log "headers merged into $DEST/$arch_pkg"
echo "BCC_KERNEL_SOURCE=$DEST/$arch_pkg"
