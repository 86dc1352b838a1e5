#!/usr/bin/env bash
# Builds the three images docker-compose.yml runs, as offline stand-ins from local files (for
# machines without a container registry; docker-compose.local.yml then keeps them): the runner,
# the sidecar (after `npm install`) and Open WebUI (after scripts/openwebui-setup.sh). Each is
# rebuilt only when its inputs changed. RUNNER_IMAGE_BUILD, SIDECAR_IMAGE_BUILD or
# OPENWEBUI_IMAGE_BUILD set to auto or dockerfile still choose otherwise for one image.
set -euo pipefail
cd "$(dirname "$0")/.."
# postgres: docker-stack.local.yml's PostgreSQL, from Debian's (scripts/postgres-setup.sh); 4 s, 87 MB.
for service in runner sidecar openwebui postgres; do
  var="$(echo "$service" | tr a-z A-Z)_IMAGE_BUILD"
  # The legacy builder's deprecation notice is noise here.
  env "$var=${!var:-local}" bash "services/$service/build-image.sh" 2> >(grep -v -i -E 'deprecated|buildx|buildkit|^\s*$' >&2)
done
