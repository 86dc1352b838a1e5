#!/usr/bin/env bash
# Makes this Docker engine a swarm manager for RUNNER_MODE=swarm and its tests (pretest, run by
# scripts/test-setup.sh; needs a running engine). Idempotent: nothing happens when the engine
# already manages a swarm that advertises the right address with the right address pool.
#
#   SWARM_ADVERTISE_ADDR  the address other nodes reach this manager at (default: the gateway of
#                         the engine's default bridge, e.g. 172.17.0.1: workers started as
#                         containers by scripts/swarm-workers.sh reach it; 127.0.0.1 would not do)
#   SWARM_ADDR_POOL       where overlay networks take their subnets (default 10.220.0.0/16: apart
#                         from the docker-mode runner pool 10.213.0.0/16, the docker suites'
#                         10.214.0.0/24 and 10.215.0.0/24, and Docker's local pools 172.17-31/16
#                         and 192.168/16 that the compose stack's networks come from)
#   SWARM_SUBNET_SIZE     prefix of each overlay network's subnet (default 24)
#   SWARM_REINIT=1        leave and re-create a swarm set up differently even when it runs
#                         services that are not Open Persona's (they are lost)
#
# A swarm set up otherwise (e.g. `docker swarm init --advertise-addr 127.0.0.1`) is re-created
# when it runs nothing but Open Persona's services (label open-persona.managed=true); else it is
# kept with a warning: single-node use still works, workers cannot join it.
set -euo pipefail

pool="${SWARM_ADDR_POOL:-10.220.0.0/16}"
size="${SWARM_SUBNET_SIZE:-24}"
# The default bridge's own address (its IPAM config leaves the gateway out: read the interface).
bridge_addr() {
  local dev
  dev="$(docker network inspect bridge -f '{{index .Options "com.docker.network.bridge.name"}}' 2>/dev/null || true)"
  case "$dev" in "" | "<no value>") dev=docker0 ;; esac
  ip -4 -o addr show dev "$dev" 2>/dev/null | awk '{sub(/\/.*/, "", $4); print $4; exit}'
}
addr="${SWARM_ADVERTISE_ADDR:-$(bridge_addr)}"
[ -n "$addr" ] || { echo "swarm-setup: no default bridge gateway found; set SWARM_ADVERTISE_ADDR" >&2; exit 1; }

state="$(docker info -f '{{.Swarm.LocalNodeState}}')"
manager="$(docker info -f '{{.Swarm.ControlAvailable}}')"

init() {
  # --data-path-addr too: VXLAN traffic leaves from the same address the workers reach.
  docker swarm init --advertise-addr "$addr" --data-path-addr "$addr" \
    --default-addr-pool "$pool" --default-addr-pool-mask-length "$size" >/dev/null
  # Keep few dead tasks per service (the default 5 × every runner adds up in `docker ps -a`).
  docker swarm update --task-history-limit 2 >/dev/null
  echo "swarm-setup: this engine manages a new swarm (advertises $addr, overlay pool $pool in /$size)"
}

case "$state" in
  inactive)
    init
    exit 0 ;;
  active) ;;
  pending | locked | error)
    echo "swarm-setup: the engine's swarm state is '$state' ($(docker info -f '{{.Swarm.Error}}')); leaving it" >&2
    docker swarm leave --force >/dev/null
    init
    exit 0 ;;
  *) echo "swarm-setup: unknown swarm state '$state'" >&2; exit 1 ;;
esac

have_addr="$(docker info -f '{{.Swarm.NodeAddr}}')"
have_pool="$(docker info -f '{{range .Swarm.Cluster.DefaultAddrPool}}{{.}} {{end}}')"
have_size="$(docker info -f '{{.Swarm.Cluster.SubnetSize}}')"
if [ "$manager" = true ] && [ "$have_addr" = "$addr" ] && [ "$have_pool" = "$pool " ] && [ "$have_size" = "$size" ]; then
  exit 0
fi

why="advertises ${have_addr:-?}, overlay pool ${have_pool:-default 10.0.0.0/8 }in /${have_size:-?}; wanted $addr, $pool in /$size"
[ "$manager" = true ] || why="this engine is a worker of another swarm"
others=0
if [ "$manager" = true ]; then
  others=$(($(docker service ls -q | wc -l) - $(docker service ls -q --filter label=open-persona.managed=true | wc -l)))
fi
if [ "$others" -gt 0 ] && [ "${SWARM_REINIT:-0}" != 1 ]; then
  echo "swarm-setup: WARNING: the swarm is set up differently ($why) and runs other services;" \
    "kept as it is (SWARM_REINIT=1 re-creates it, and loses them)." >&2
  [ "$have_addr" = "$addr" ] || echo "swarm-setup: workers in containers (scripts/swarm-workers.sh) cannot join a manager at $have_addr" >&2
  exit 0
fi
if [ "$manager" != true ] && [ "${SWARM_REINIT:-0}" != 1 ]; then
  echo "swarm-setup: $why; SWARM_REINIT=1 makes it leave and start its own" >&2
  exit 1
fi
echo "swarm-setup: re-creating the swarm ($why)"
docker swarm leave --force >/dev/null
init
