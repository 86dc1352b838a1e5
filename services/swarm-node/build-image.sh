#!/usr/bin/env bash
# Builds the swarm worker node image ($SWARM_NODE_IMAGE, default open-persona-swarm-node:latest):
# a Docker engine to run in a privileged container, so that one machine can hold a multi-node
# swarm for the tests (scripts/swarm-workers.sh). Offline, FROM scratch, from this machine's own
# engine: dockerd, containerd, its runc shim, runc, docker-init, docker-proxy, iptables (nft) with
# its extensions, their libraries, and a static busybox for the entrypoint. No docker CLI: the host
# drives each node's engine through a socket it shares (entrypoint.sh).
# Skipped when the image was built from the same inputs (label open-persona.inputs).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
. "$root/scripts/image-lib.sh"
image="${SWARM_NODE_IMAGE:-open-persona-swarm-node:latest}"

bin() { local p; p="$(command -v "$1" 2>/dev/null)" || { echo "swarm-node: $1 not found (Debian: apt-get install docker.io iptables)" >&2; return 1; }; readlink -f "$p"; }
dockerd="$(bin dockerd)"; containerd="$(bin containerd)"; shim="$(bin containerd-shim-runc-v2)"
runc="$(bin runc)"; init="$(bin docker-init)"; proxy="$(bin docker-proxy)"
xtables="$(dirname "$(bin iptables)")/xtables-nft-multi"
[ -x "$xtables" ] || { echo "swarm-node: iptables is not the nf_tables variant (no $xtables)" >&2; exit 1; }
xtmods=/usr/lib/x86_64-linux-gnu/xtables
[ -d "$xtmods" ] || xtmods="$(dirname "$(ldconfig -p | grep -oE '/[^ ]*/libxtables\.so\.[0-9]+$' | head -1)")/xtables"
busybox="$(command -v busybox || true)"

hash="$( { cat "$0" "$here/entrypoint.sh" "$root/scripts/image-lib.sh"; listing "$dockerd" "$containerd" "$shim" "$runc" "$init" "$proxy" "$xtables" "$xtmods" "$busybox"; } | inputs_hash)"
if image_current "$image" "$hash"; then
  echo "$image is up to date (inputs $hash)"
  exit 0
fi

echo "building $image offline from this machine's Docker engine"
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
rootfs="$ctx/rootfs"
mkdir -p "$rootfs"/{usr/local/bin,usr/sbin,var/lib/docker,run,etc/docker}
add_busybox "$rootfs"
add_base "$rootfs" node
for f in "$dockerd" "$containerd" "$shim" "$runc" "$proxy"; do cp "$f" "$rootfs/usr/local/bin/"; done
cp "$init" "$rootfs/usr/local/bin/docker-init"
cp "$xtables" "$rootfs/usr/sbin/xtables-nft-multi"
for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do ln -s xtables-nft-multi "$rootfs/usr/sbin/$t"; done
mkdir -p "$rootfs$xtmods"
cp -L "$xtmods"/*.so "$rootfs$xtmods/"
for f in protocols services ethertypes; do [ -f "/etc/$f" ] && cp "/etc/$f" "$rootfs/etc/"; done
printf 'hosts: files dns\nprotocols: files\nservices: files\n' >"$rootfs/etc/nsswitch.conf"
echo 'docker:x:998:' >>"$rootfs/etc/group"
printf 'NAME="Open Persona swarm node"\nID=open-persona-swarm-node\nVERSION_ID=1\n' >"$rootfs/etc/os-release"
find "$rootfs/usr/local/bin" "$rootfs/usr/sbin/xtables-nft-multi" "$rootfs$xtmods" -type f -print0 | copy_libs "$rootfs"
install -m 0755 "$here/entrypoint.sh" "$rootfs/usr/local/bin/entrypoint.sh"

import_rootfs "$rootfs" "$image" \
  "ENV PATH=/usr/local/bin:/usr/sbin:/bin" \
  "VOLUME [\"/var/lib/docker\"]" \
  "ENTRYPOINT [\"/usr/local/bin/entrypoint.sh\"]" \
  "LABEL open-persona.swarm-node=local" \
  "LABEL open-persona.inputs=$hash"
