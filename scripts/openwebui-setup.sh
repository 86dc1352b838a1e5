#!/usr/bin/env bash
# Installs what the Open WebUI tests need, idempotently:
#   .venv/openwebui   the pinned Open WebUI from PyPI (its full dependency set), reused while
#                     it holds the pin; the pin is docker-compose.yml's OPENWEBUI_VERSION default
#   .venv/pyclient    the official Python `openai` client, pinned below
#   chromium          Debian's, for the browser test (playwright-core drives it; no download)
# Prints the time each install took. Nothing here runs at test time: the tests only start
# what is installed, offline.
set -euo pipefail
cd "$(dirname "$0")/.."

OPENAI_PY_VERSION=2.29.0   # the official Python client; the same version Open WebUI 0.12.4 pins
UV_VERSION=0.13.9          # the installer: resolves and installs Open WebUI's ~260 wheels in parallel

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

# One pin: the default of OPENWEBUI_VERSION in docker-compose.yml (every occurrence must agree).
pins="$(grep -oE 'OPENWEBUI_VERSION:-v[0-9]+\.[0-9]+\.[0-9]+' docker-compose.yml | sed 's/.*:-v//' | sort -u)"
if [ "$(printf '%s\n' "$pins" | grep -c .)" != 1 ]; then
  echo "openwebui-setup: docker-compose.yml must pin exactly one OPENWEBUI_VERSION default, found: ${pins:-none}" >&2
  exit 1
fi
OPENWEBUI_VERSION="$pins"

py="$(command -v python3.11 || command -v python3)"
"$py" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)' || {
  echo "openwebui-setup: Open WebUI needs Python 3.11 or 3.12; $py is $("$py" --version)" >&2
  exit 1
}

# venv_with DIR MARKER PACKAGES…: (re)creates DIR unless its marker file says MARKER.
venv_with() {
  local dir="$1" marker="$2"
  shift 2
  if [ "$(cat "$dir/.open-persona-pin" 2>/dev/null)" = "$marker" ]; then return 0; fi
  local t0=$SECONDS
  rm -rf "$dir"
  "$py" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
  # --link-mode=copy: the cache may be on another filesystem; no cache kept for a one-off install.
  "$dir/bin/uv" pip install -q --no-cache --link-mode=copy --python "$dir/bin/python" "$@"
  echo "$marker" > "$dir/.open-persona-pin"
  echo "openwebui-setup: installed $* into $dir in $((SECONDS - t0)) s"
}

mkdir -p .venv
venv_with .venv/openwebui "open-webui==$OPENWEBUI_VERSION" "open-webui==$OPENWEBUI_VERSION"
venv_with .venv/pyclient "openai==$OPENAI_PY_VERSION" "openai==$OPENAI_PY_VERSION"

if ! command -v chromium >/dev/null 2>&1; then
  t0=$SECONDS
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium fonts-liberation >/dev/null
  echo "openwebui-setup: installed chromium in $((SECONDS - t0)) s"
fi
