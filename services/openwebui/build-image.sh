#!/usr/bin/env bash
# Builds the Open WebUI image docker-compose.yml runs ($OPENWEBUI_IMAGE, default
# open-persona-openwebui:v<pin>, the pin being docker-compose.yml's OPENWEBUI_VERSION default).
#   OPENWEBUI_IMAGE_BUILD=dockerfile  services/openwebui/Dockerfile: the pinned upstream image (needs ghcr.io)
#   OPENWEBUI_IMAGE_BUILD=local       an offline stand-in FROM scratch: the same version from PyPI as
#                                     the test suite runs it (.venv/openwebui, scripts/openwebui-setup.sh),
#                                     its Python interpreter and standard library, and the shared
#                                     libraries they link against; offline (no model or update fetches)
#   OPENWEBUI_IMAGE_BUILD=auto        (default) dockerfile when ghcr.io answers, else local
# A local build is skipped when the image was built from the same inputs (label open-persona.inputs).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
. "$root/scripts/image-lib.sh"

version="$(grep -oE 'OPENWEBUI_VERSION:-v[0-9]+\.[0-9]+\.[0-9]+' "$root/docker-compose.yml" | head -1 | sed 's/.*:-v//')"
image="${OPENWEBUI_IMAGE:-open-persona-openwebui:v$version}"
mode="$(build_mode "${OPENWEBUI_IMAGE_BUILD:-auto}" "ghcr.io/open-webui/open-webui:v$version")"

if [ "$mode" = dockerfile ]; then
  echo "building $image from services/openwebui/Dockerfile"
  exec docker build -f "$here/Dockerfile" --build-arg "OPENWEBUI_VERSION=v$version" -t "$image" "$root"
fi

venv="$(readlink -f "$root/.venv/openwebui")"
if [ "$(cat "$venv/.open-persona-pin" 2>/dev/null)" != "open-webui==$version" ]; then
  echo "Open WebUI $version is not installed in .venv/openwebui: run scripts/openwebui-setup.sh" >&2
  exit 1
fi
python="$(readlink -f "$venv/bin/python")"
stdlib="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"

# What Open WebUI run from the virtualenv writes into it: open_webui/static at every start, and
# <site-packages>/data (its default DATA_DIR) when run without DATA_DIR. Neither is an input.
hash="$( { cat "$0" "$root/scripts/image-lib.sh"; listing "$venv" "$stdlib" "$python" | grep -v -e '/open_webui/static/' -e "^$site/data/"; } | inputs_hash)"
if image_current "$image" "$hash"; then
  echo "$image is up to date (local stand-in, inputs $hash)"
  exit 0
fi

echo "building $image offline from local files (Open WebUI $version from $venv)"
t0=$SECONDS
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
rootfs="$ctx/rootfs"
app=/opt/open-webui
# The virtualenv at /opt/open-webui; the interpreter and its standard library at their own
# paths, where the virtualenv's pyvenv.cfg (`home`) and bin/python link expect them.
copy_tree "$venv" "$rootfs$app"
# PyPI's torch is the CUDA build; the upstream image installs the CPU one, without triton and
# the nvidia-* libraries (4 GB here). Of those, only what torch links against stays (copy_libs
# below): `import torch` loads it, nothing runs on it.
rm -rf "$rootfs$app${site#"$venv"}"/{nvidia,triton,triton-*.dist-info}
# A database someone's run left there: the image's DATA_DIR is /app/backend/data.
rm -rf "$rootfs$app${site#"$venv"}/data"
mkdir -p "$rootfs$(dirname "$python")"
cp -L "$python" "$rootfs$python"
copy_tree "$stdlib" "$rootfs$stdlib"
rm -rf "$rootfs$stdlib"/{test,site-packages,dist-packages}
find "$venv" "$stdlib" "$python" \( -path "$site/nvidia" -o -path "$site/triton" \) -prune -o \
  -type f \( -name '*.so' -o -name '*.so.*' -o -path "$python" \) -print0 |
  copy_libs "$rootfs" "$venv=$app"
add_busybox "$rootfs"
add_base "$rootfs" openwebui
mkdir -p "$rootfs/app/backend/data"

# What the upstream image sets that matters here, and what keeps it offline: it has no
# embedding model baked in (the upstream image does), so nothing may try to download one.
# The console script's #! names the host's virtualenv: CMD runs it through the image's python.
import_rootfs "$rootfs" "$image" \
  "ENV PATH=$app/bin:/bin ENV=prod PORT=8080 DATA_DIR=/app/backend/data \
HF_HOME=/app/backend/data/cache/embedding/models SENTENCE_TRANSFORMERS_HOME=/app/backend/data/cache/embedding/models \
TIKTOKEN_CACHE_DIR=/app/backend/data/cache/tiktoken \
OFFLINE_MODE=true HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ENABLE_VERSION_UPDATE_CHECK=false \
SCARF_NO_ANALYTICS=true DO_NOT_TRACK=true ANONYMIZED_TELEMETRY=false" \
  "LABEL open-persona.openwebui-build=local open-persona.inputs=$hash" \
  "WORKDIR /app/backend" \
  "EXPOSE 8080" \
  'CMD ["python3", "/opt/open-webui/bin/open-webui", "serve", "--host", "0.0.0.0", "--port", "8080"]'
echo "in $((SECONDS - t0)) s"
