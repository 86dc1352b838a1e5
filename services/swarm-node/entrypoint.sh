#!/bin/sh
# A swarm worker node's engine (services/swarm-node/build-image.sh), run by scripts/swarm-workers.sh
# in a container holding every capability the host has, with /var/lib/docker on a volume
# (overlay2 cannot stack on the container's own overlayfs) and a host directory at
# /run/swarm-node, where its socket is shared with the host.
set -eu

# Not privileged (a sandbox's bounding set may lack capabilities --privileged asks for), so /sys
# and the cgroup hierarchies come read-only: the node's own containers need them writable.
mount -o remount,rw /sys
awk '$3 ~ /^cgroup2?$/ { print $2 }' /proc/self/mounts | while read -r m; do mount -o remount,rw,bind "$m"; done

# cgroup v2 (as in Docker's own dind): processes cannot sit in a group whose controllers are
# handed down, so everything here moves to a child group first.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  mkdir -p /sys/fs/cgroup/init
  xargs -rn1 </sys/fs/cgroup/cgroup.procs >/sys/fs/cgroup/init/cgroup.procs 2>/dev/null || :
  sed -e 's/ / +/g' -e 's/^/+/' </sys/fs/cgroup/cgroup.controllers >/sys/fs/cgroup/cgroup.subtree_control || :
fi
rm -f /run/swarm-node/docker.sock /var/run/docker.pid

# host.docker.internal (host-gateway) in this node's containers: the machine these nodes run on,
# reached through this container's own gateway, as it is on the manager; not this container.
gateway="$(ip route | awk '$1 == "default" { print $3; exit }')"

# Local networks (its docker0, docker_gwbridge) from a range of their own: the defaults would
# shadow the host's bridge, where this node's container and the swarm manager are.
exec dockerd \
  --host unix:///var/run/docker.sock --host unix:///run/swarm-node/docker.sock \
  --data-root /var/lib/docker \
  --bip "${NODE_BIP:-10.221.0.1/24}" --default-address-pool "base=${NODE_POOL:-10.221.0.0/16},size=24" \
  ${gateway:+--host-gateway-ip "$gateway"} "$@"
