#!/usr/bin/env bash
# Host firewall for docker-mode runners (docs/isolation.md). Run as root on the Docker host,
# after dockerd has started (it needs Docker's DOCKER-USER chain). Idempotent: running it again
# with other options replaces the rules; --remove takes them away.
#
#   runner-firewall.sh --pool 10.213.0.0/16 --allow-host-port 11434     # e.g. a local model server
#   runner-firewall.sh --pool 10.213.0.0/16 --drop-dest 192.168.0.0/16  # also keep runners off the LAN
#   runner-firewall.sh --pool 10.213.0.0/16 --remove
#
# Two chains per pool (IPv4; the runner networks have no IPv6), named after the pool so that
# pools do not touch each other's rules:
#   OPR-<pool>-FWD, jumped to from DOCKER-USER (traffic the host forwards: to the LAN, the
#     internet, cloud metadata): new connections from the pool to 169.254.0.0/16 and to every
#     --drop-dest range are dropped; everything else goes on to Docker's own rules.
#   OPR-<pool>-IN, jumped to from the top of INPUT (traffic to the host itself, on any of its
#     addresses: host.docker.internal, the bridge gateways, a locally bound 169.254.169.254):
#     replies to connections the host opened pass, TCP to each --allow-host-port passes on to
#     the host's own INPUT rules, everything else from the pool is dropped.
set -euo pipefail

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

pool=""
remove=0
ports=()
drops=()
while [ $# -gt 0 ]; do
  case "$1" in
    --pool) pool="${2:-}"; shift 2 ;;
    --allow-host-port) ports+=("${2:-}"); shift 2 ;;
    --drop-dest) drops+=("${2:-}"); shift 2 ;;
    --remove) remove=1; shift ;;
    -h|--help) usage ;;
    *) echo "runner-firewall: unknown argument $1" >&2; usage ;;
  esac
done

cidr_re='^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$'
[[ "$pool" =~ $cidr_re ]] || { echo "runner-firewall: --pool must be an IPv4 CIDR (RUNNER_SUBNET_POOL), got '$pool'" >&2; exit 2; }
for p in ${ports[@]+"${ports[@]}"}; do
  [[ "$p" =~ ^[0-9]{1,5}$ ]] && [ "$p" -ge 1 ] && [ "$p" -le 65535 ] || { echo "runner-firewall: bad port '$p'" >&2; exit 2; }
done
for d in ${drops[@]+"${drops[@]}"}; do
  [[ "$d" =~ $cidr_re ]] || { echo "runner-firewall: --drop-dest must be an IPv4 CIDR, got '$d'" >&2; exit 2; }
done

tag="OPR-${pool//\//_}"
fwd="${tag}-FWD"
in="${tag}-IN"
ipt() { iptables -w 10 "$@"; }

unhook() { # chain rule...: delete every copy of a jump
  local chain="$1"; shift
  while ipt -C "$chain" "$@" 2>/dev/null; do ipt -D "$chain" "$@"; done
}

# The hooks go first, then the chains (a chain still referenced cannot be deleted).
unhook DOCKER-USER -j "$fwd" 2>/dev/null || true
unhook INPUT -j "$in"
for c in "$fwd" "$in"; do
  if ipt -nL "$c" >/dev/null 2>&1; then ipt -F "$c"; ipt -X "$c"; fi
done
if [ "$remove" = 1 ]; then
  echo "runner-firewall: removed rules for $pool"
  exit 0
fi

ipt -nL DOCKER-USER >/dev/null 2>&1 || { echo "runner-firewall: no DOCKER-USER chain: start dockerd (with iptables enabled) first" >&2; exit 1; }

ipt -N "$fwd"
# Replies (also the runner's answers to a sidecar on its bridge, which br_netfilter sends here).
ipt -A "$fwd" -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
ipt -A "$fwd" -s "$pool" -d 169.254.0.0/16 -j DROP
for d in ${drops[@]+"${drops[@]}"}; do ipt -A "$fwd" -s "$pool" -d "$d" -j DROP; done
ipt -A "$fwd" -j RETURN

ipt -N "$in"
ipt -A "$in" -s "$pool" -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
# Before the allowed ports: an allowed port must not open a metadata address bound on the host.
ipt -A "$in" -s "$pool" -d 169.254.0.0/16 -j DROP
for p in ${ports[@]+"${ports[@]}"}; do ipt -A "$in" -s "$pool" -p tcp --dport "$p" -j RETURN; done
ipt -A "$in" -s "$pool" -j DROP

# Docker re-creates DOCKER-USER's jump from FORWARD at start, but keeps the chain's contents.
ipt -I DOCKER-USER 1 -j "$fwd"
ipt -I INPUT 1 -j "$in"
echo "runner-firewall: $pool → metadata and ${#drops[@]} extra range(s) dropped; host ports allowed: ${ports[*]:-none}"
