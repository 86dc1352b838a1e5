#!/usr/bin/env bash
# Prepares this machine for `npm test`: a running Docker engine (installed from Debian's
# packages when missing), PostgreSQL, and the runner image, built offline from local files unless
# RUNNER_IMAGE_BUILD says otherwise, as are the compose stack's other images. Idempotent: fast
# when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
{ ldd "$(command -v busybox 2>/dev/null || echo /nonexistent)" 2>&1 || true; } | grep -q 'not a dynamic' || need_pkgs+=(busybox-static)
command -v docker-compose >/dev/null 2>&1 || need_pkgs+=(docker-compose)
command -v bwrap >/dev/null 2>&1 || need_pkgs+=(bubblewrap)
command -v iptables >/dev/null 2>&1 || need_pkgs+=(iptables)
command -v runsc >/dev/null 2>&1 || need_pkgs+=(runsc)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "test-setup: installing ${need_pkgs[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# gVisor as Docker runtime "runsc" (RUNNER_RUNTIME, docker-isolation.test.ts). --network=host:
# bookworm's runsc (2022-12) takes every network namespace for the host's on kernels that show
# /proc/sys/net/core/rmem_default in each one, and refuses to start ("cannot run with network
# enabled in root network namespace"); with it, gVisor uses the container's own namespace.
runsc_added=0
if ! grep -q '"runsc"' /etc/docker/daemon.json 2>/dev/null; then
  as_root mkdir -p /etc/docker
  as_root "$(command -v node)" -e 'const fs = require("fs"), f = "/etc/docker/daemon.json";
    const c = fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, "utf8")) : {};
    c.runtimes = { ...c.runtimes, runsc: { path: "/usr/bin/runsc", runtimeArgs: ["--network=host"] } };
    fs.writeFileSync(f, JSON.stringify(c, null, 2) + "\n");'
  runsc_added=1
fi

if ! docker info >/dev/null 2>&1; then
  echo "test-setup: starting dockerd"
  # setsid: dockerd must outlive the shell (and process group) that started it.
  as_root sh -c 'setsid nohup dockerd >/tmp/open-persona-dockerd.log 2>&1 </dev/null &'
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /tmp/open-persona-dockerd.log" >&2; tail -20 /tmp/open-persona-dockerd.log >&2; exit 1; }
fi
# A running engine reads new runtimes on SIGHUP: nothing that runs is restarted.
if [ "$runsc_added" = 1 ]; then
  as_root kill -HUP "$(pidof dockerd)"
  for _ in $(seq 1 20); do docker info --format '{{json .Runtimes}}' | grep -q runsc && break; sleep 0.5; done
fi

out="$(RUNNER_IMAGE_BUILD="${RUNNER_IMAGE_BUILD:-local}" bash services/runner/build-image.sh 2>&1)" || { echo "$out" >&2; exit 1; }
# The legacy builder's deprecation notice is noise here.
echo "$out" | grep -v -i -E 'deprecated|buildx|buildkit|^\s*$' || true

# PostgreSQL, for replicas sharing state (DATABASE_URL).
bash scripts/postgres-setup.sh

# The real Open WebUI (pinned), the official Python openai client and Debian's chromium.
bash scripts/openwebui-setup.sh

# The compose stack's images as stand-ins from local files (compose-stack.test.ts): the sidecar's
# and, from the virtualenv above, Open WebUI's. Rebuilt only when their inputs changed.
bash scripts/local-images.sh
bash scripts/swarm-setup.sh  # a swarm manager for RUNNER_MODE=swarm, reachable by swarm-workers.sh workers
