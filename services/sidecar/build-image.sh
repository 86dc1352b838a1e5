#!/usr/bin/env bash
# Builds the sidecar image docker-compose.yml runs ($SIDECAR_IMAGE, default open-persona-sidecar:latest).
#   SIDECAR_IMAGE_BUILD=dockerfile  services/sidecar/Dockerfile (needs a registry: node base image, npm ci)
#   SIDECAR_IMAGE_BUILD=local       an offline stand-in FROM scratch: this machine's node binary and the
#                                   libraries it links against, the sidecar built here (npm run build)
#                                   and its production dependencies from node_modules
#   SIDECAR_IMAGE_BUILD=auto        (default) dockerfile when the registry answers, else local
# A local build is skipped when the image was built from the same inputs (label open-persona.inputs).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
. "$root/scripts/image-lib.sh"

image="${SIDECAR_IMAGE:-open-persona-sidecar:latest}"
mode="$(build_mode "${SIDECAR_IMAGE_BUILD:-auto}" node:20-bookworm-slim)"

if [ "$mode" = dockerfile ]; then
  echo "building $image from services/sidecar/Dockerfile"
  exec docker build -f "$here/Dockerfile" -t "$image" "$root"
fi

cd "$root"
[ -d node_modules ] || { echo "node_modules is missing: run npm install first" >&2; exit 1; }
npm run --silent build >/dev/null
node="$(readlink -f "$(command -v node)")"
# The packages `npm ci --omit=dev` would install (the Dockerfile's), as installed here: top-level
# ones only (a package's own node_modules comes with it).
parseable="$({ npm ls --omit=dev --all --parseable 2>/dev/null || true; })"
top_level() { sed -n "s|^$root/$1/||p" <<<"$parseable" | grep -vE '/node_modules/' | grep -vE '^@[^/]+$' | LC_ALL=C sort -u || true; }
deps="$(top_level node_modules)"
# What npm could not hoist (another version of it is at the top) sits in the workspace's own node_modules.
own_deps="$(top_level services/sidecar/node_modules)"
[ -n "$deps" ] || { echo "npm ls found no production dependencies in node_modules" >&2; exit 1; }

# dist and bin by content (a rebuild rewrites identical files); node_modules by listing.
hash="$( {
  cat "$0" "$root/scripts/image-lib.sh" package.json package-lock.json services/sidecar/package.json
  find services/sidecar/dist services/sidecar/bin -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  # shellcheck disable=SC2086 # one package a word
  listing "$node" $(printf 'node_modules/%s ' $deps) ${own_deps:+$(printf 'services/sidecar/node_modules/%s ' $own_deps)}
} | inputs_hash)"
if image_current "$image" "$hash"; then
  echo "$image is up to date (local stand-in, inputs $hash)"
  exit 0
fi

echo "building $image offline from local files (node $(node --version))"
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
rootfs="$ctx/rootfs"
# The layout of the Dockerfile's image: the app in /app, node on PATH.
mkdir -p "$rootfs/app/services/sidecar" "$rootfs/app/node_modules" "$rootfs/usr/local/bin"
cp package.json "$rootfs/app/"
cp -r services/sidecar/package.json services/sidecar/dist services/sidecar/bin "$rootfs/app/services/sidecar/"
for dep in $deps; do copy_tree "node_modules/$dep" "$rootfs/app/node_modules/$dep"; done
for dep in $own_deps; do copy_tree "services/sidecar/node_modules/$dep" "$rootfs/app/services/sidecar/node_modules/$dep"; done
cp "$node" "$rootfs/usr/local/bin/node"
printf '%s\0' "$node" | copy_libs "$rootfs"
add_busybox "$rootfs"
add_base "$rootfs" node

import_rootfs "$rootfs" "$image" \
  "ENV PATH=/usr/local/bin:/bin NODE_ENV=production HOST=0.0.0.0 PORT=8000" \
  "LABEL open-persona.sidecar-build=local open-persona.inputs=$hash" \
  "WORKDIR /app" \
  "EXPOSE 8000" \
  'CMD ["node", "services/sidecar/dist/main.js"]'
