#!/usr/bin/env bash
# Extra swarm nodes on this machine, for the multi-node tests (RUNNER_MODE=swarm): each worker is
# a Docker engine in a container (image: services/swarm-node/build-image.sh, built offline from
# this machine's own engine), with its data root on a volume, joined to this engine's swarm
# (scripts/swarm-setup.sh) as a worker, and holding a copy of the runner image.
#
#   scripts/swarm-workers.sh up N     workers 1..N running, joined and ready, images loaded (idempotent)
#   scripts/swarm-workers.sh down [NAME…]  every worker (or those named) gone: node entries,
#                                     containers, volumes, sockets
#   scripts/swarm-workers.sh ls       one line per worker: name (= its node's hostname), socket, node id
#
# A worker's engine is reached from the host through a socket it shares:
#   docker -H unix:///run/open-persona-swarm/<name>/docker.sock ps
#   SWARM_WORKER_PREFIX   names and hostnames <prefix>1..N (default open-persona-swarm-w)
#   SWARM_WORKER_IMAGES   images copied from this engine into each worker (default: $RUNNER_IMAGE,
#                         open-persona-runner:latest); copied again only when their id changed
#   SWARM_SOCKET_ROOT     where the sockets are (default /run/open-persona-swarm)
# Workers are containers labelled open-persona.swarm-worker=<name> (deliberately not
# open-persona.managed: docker mode adopts containers by that label) and restart with the engine.
# Needs root (as the rest of the test setup): the workers hold every capability the host has.
set -euo pipefail
cd "$(dirname "$0")/.."

prefix="${SWARM_WORKER_PREFIX:-open-persona-swarm-w}"
images="${SWARM_WORKER_IMAGES:-${RUNNER_IMAGE:-open-persona-runner:latest}}"
sockets="${SWARM_SOCKET_ROOT:-/run/open-persona-swarm}"
node_image="${SWARM_NODE_IMAGE:-open-persona-swarm-node:latest}"
LABEL=open-persona.swarm-worker

say() { echo "swarm-workers: $*" >&2; }
sock() { echo "unix://$sockets/$1/docker.sock"; }
on() { local name="$1"; shift; docker -H "$(sock "$name")" "$@"; }

# The capabilities to drop from ALL: those this machine's bounding set lacks (a sandbox may withhold
# some, e.g. CAP_SYS_RESOURCE; `--privileged` then fails with "unable to apply caps").
cap_drops() {
  local names=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
    LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE
    SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME
    SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG
    WAKE_ALARM BLOCK_SUSPEND AUDIT_READ)
  local bnd i
  bnd=$((16#$(awk '/^CapBnd:/ { print $2 }' /proc/self/status)))
  for i in "${!names[@]}"; do (((bnd >> i) & 1)) || echo "--cap-drop=${names[$i]}"; done
}

manager_addr() {
  [ "$(docker info -f '{{.Swarm.ControlAvailable}}')" = true ] || { say "this engine is not a swarm manager: run scripts/swarm-setup.sh"; exit 1; }
  local addr
  addr="$(docker info -f '{{.Swarm.NodeAddr}}')"
  case "$addr" in 127.*) say "the swarm advertises $addr, which workers in containers cannot reach: run scripts/swarm-setup.sh"; exit 1 ;; esac
  echo "$addr:2377"
}

start_worker() {
  local name="$1"
  # A worker made from an older node image is made again; its volume (engine state, swarm
  # identity, images, the runners' volumes) is kept, so it comes back as the same node.
  if [ "$(docker inspect -f '{{.Image}}' "$name" 2>/dev/null)" != "$(docker image inspect -f '{{.Id}}' "$node_image")" ]; then
    docker rm -f "$name" >/dev/null 2>&1 || true
  fi
  case "$(docker inspect -f '{{.State.Running}}' "$name" 2>/dev/null || echo absent)" in
    true) return 0 ;;
    false) docker start "$name" >/dev/null; return 0 ;;
  esac
  mkdir -p "$sockets/$name"
  # Not --privileged (see cap_drops), but what dockerd needs of it: every capability there is,
  # no seccomp/AppArmor filter, writable /proc/sys (entrypoint.sh remounts /sys and the cgroups),
  # every device. /var/lib/docker on a volume: overlay2 cannot stack on the container's overlayfs.
  # shellcheck disable=SC2046
  docker run -d --name "$name" --hostname "$name" --label "$LABEL=$name" --restart unless-stopped --init \
    --cap-add ALL $(cap_drops) \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined --security-opt systempaths=unconfined \
    --device-cgroup-rule 'a *:* rwm' \
    --mount "type=volume,src=$name-data,dst=/var/lib/docker,volume-label=$LABEL=$name" \
    -v "$sockets/$name:/run/swarm-node" \
    "$node_image" >/dev/null
}

wait_engine() {
  local name="$1" i
  for i in $(seq 1 120); do
    on "$name" info >/dev/null 2>&1 && return 0
    [ "$(docker inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = true ] || break
    sleep 0.25
  done
  say "$name: its engine did not start"; docker logs --tail 20 "$name" >&2 || true
  exit 1
}

# Joined to *this* swarm (a worker left from a swarm since re-created is known to nobody here).
join_worker() {
  local name="$1" managers="$2" state id
  state="$(on "$name" info -f '{{.Swarm.LocalNodeState}}')"
  id="$(on "$name" info -f '{{.Swarm.NodeID}}')"
  if [ "$state" = active ] && [ -n "$id" ] && docker node inspect "$id" >/dev/null 2>&1; then return 0; fi
  [ "$state" = inactive ] || on "$name" swarm leave --force >/dev/null 2>&1 || true
  on "$name" swarm join --token "$(docker swarm join-token -q worker)" \
    --advertise-addr eth0 --data-path-addr eth0 "$managers" >/dev/null
}

# Entries of this hostname other than the live one: a removed or re-joined worker's old self.
drop_stale_nodes() {
  local name="$1" keep="${2:-}" id host
  docker node ls --format '{{.ID}} {{.Hostname}}' | while read -r id host; do
    [ "$host" = "$name" ] && [ "$id" != "$keep" ] && docker node rm --force "$id" >/dev/null 2>&1 || true
  done
}

wait_ready() {
  local name="$1" id="$2" i
  for i in $(seq 1 120); do
    [ "$(docker node inspect -f '{{.Status.State}}' "$id" 2>/dev/null)" = ready ] && return 0
    sleep 0.25
  done
  say "$name: node $id did not become ready"; exit 1
}

load_images() {
  local name="$1" image want
  for image in $images; do
    want="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null)" || { say "image $image is not on this engine"; exit 1; }
    [ "$(on "$name" image inspect -f '{{.Id}}' "$image" 2>/dev/null)" = "$want" ] && continue
    docker save "$image" | on "$name" load -q >/dev/null
  done
}

up() {
  local n="$1" i name id managers
  [[ "$n" =~ ^[0-9]+$ ]] || { say "usage: $0 up N"; exit 2; }
  managers="$(manager_addr)"
  bash services/swarm-node/build-image.sh >&2
  for i in $(seq 1 "$n"); do
    name="$prefix$i"
    start_worker "$name"
    wait_engine "$name"
    join_worker "$name" "$managers"
    id="$(on "$name" info -f '{{.Swarm.NodeID}}')"
    drop_stale_nodes "$name" "$id"
    docker node update --label-add open-persona.test-worker=true "$id" >/dev/null
    load_images "$name"
    wait_ready "$name" "$id"
    say "$name is node $id (ready)"
  done
}

down() {
  local name id names
  names="${*:-$(docker ps -a --filter "label=$LABEL" --format '{{.Names}}')}"
  for name in $names; do
    [ "$(docker inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$name" 2>/dev/null)" = "$name" ] || { say "$name is not a worker"; continue; }
    id="$(on "$name" info -f '{{.Swarm.NodeID}}' 2>/dev/null || true)"
    on "$name" swarm leave --force >/dev/null 2>&1 || true
    [ -n "$id" ] && docker node rm --force "$id" >/dev/null 2>&1 || true
    docker rm -f -v "$name" >/dev/null
    docker volume rm "$name-data" >/dev/null 2>&1 || true
    drop_stale_nodes "$name"
    rm -rf "${sockets:?}/$name"
    say "$name removed"
  done
  [ $# -eq 0 ] || return 0
  # Nodes and volumes left by a worker removed by hand.
  docker node ls --format '{{.ID}} {{.Hostname}} {{.Status}}' | awk -v p="$prefix" 'index($2, p) == 1 && $3 == "Down" { print $1 }' |
    xargs -r docker node rm --force >/dev/null 2>&1 || true
  # Volumes left by a worker removed by hand.
  docker volume ls -q --filter "label=$LABEL" | xargs -r docker volume rm >/dev/null 2>&1 || true
}

list() {
  local name
  for name in $(docker ps --filter "label=$LABEL" --format '{{.Names}}' | sort); do
    echo "$name $(sock "$name") $(on "$name" info -f '{{.Swarm.NodeID}}' 2>/dev/null || echo -)"
  done
}

case "${1:-}" in
  up) up "${2:-1}" ;;
  down) shift; down "$@" ;;
  ls) list ;;
  *) say "usage: $0 up N | down [NAME…] | ls"; exit 2 ;;
esac
