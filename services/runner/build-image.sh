#!/usr/bin/env bash
# Builds the runner image ($RUNNER_IMAGE, default open-persona-runner:latest).
#   RUNNER_IMAGE_BUILD=dockerfile  services/runner/Dockerfile (needs a registry for its base images)
#   RUNNER_IMAGE_BUILD=local       an offline stand-in FROM scratch: glibc + static busybox + the
#                                  opencode binary from node_modules (no git/ripgrep)
#   RUNNER_IMAGE_BUILD=auto        (default) dockerfile when a registry answers, else local
# A local build is skipped when the image was built from the same inputs (label open-persona.inputs).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
. "$root/scripts/image-lib.sh"
image="${RUNNER_IMAGE:-open-persona-runner:latest}"
mode="$(build_mode "${RUNNER_IMAGE_BUILD:-auto}" debian:bookworm-slim)"

if [ "$mode" = dockerfile ]; then
  echo "building $image from services/runner/Dockerfile"
  exec docker build -t "$image" "$here"
fi

binary="$(cd "$root" && node -e 'const r=require("module").createRequire(process.cwd()+"/");for(const p of ["opencode-linux-x64","opencode-linux-x64-baseline"]){try{console.log(require("path").join(require("path").dirname(r.resolve(p+"/package.json")),"bin","opencode"));process.exit(0)}catch{}}process.exit(1)')" \
  || { echo "opencode binary not found: run npm install first" >&2; exit 1; }
busybox="$(command -v busybox || true)"
# A dynamic busybox would need its own libraries in the image.
if [ -z "$busybox" ] || ! { ldd "$busybox" 2>&1 || true; } | grep -q 'not a dynamic'; then
  echo "a static busybox is needed (Debian: apt-get install busybox-static)" >&2
  exit 1
fi

hash="$( { cat "$0" "$root/scripts/image-lib.sh"; listing "$binary" "$busybox"; } | inputs_hash)"
if image_current "$image" "$hash"; then
  echo "$image is up to date (local stand-in, inputs $hash)"
  exit 0
fi

echo "building $image offline from local files"
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
rootfs="$ctx/rootfs"
mkdir -p "$rootfs"/{bin,etc,tmp,usr/local/bin,etc/ssl/certs} "$ctx"/owned/{workspace,data/home,data/share,data/state,data/config,data/cache}
chmod 1777 "$rootfs/tmp"

# glibc and whatever else the binary links against, at the same paths.
for lib in $(ldd "$binary" | grep -oE '/[^ ]+\.so[^ ]*'); do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
cp "$binary" "$rootfs/usr/local/bin/opencode"
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
  [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
[ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/bin/sh\nopencode:x:1000:1000:opencode:/data/home:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nopencode:x:1000:\n' >"$rootfs/etc/group"

cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
# COPY makes everything root's: the runner user's own directories need --chown.
COPY --chown=1000:1000 owned/ /
ENV PATH=/usr/local/bin:/bin \
    HOME=/data/home \
    XDG_DATA_HOME=/data/share \
    XDG_STATE_HOME=/data/state \
    XDG_CONFIG_HOME=/data/config \
    XDG_CACHE_HOME=/data/cache \
    SHELL=/bin/sh \
    OPENCODE_DISABLE_AUTOUPDATE=1
LABEL open-persona.runner-build=local
USER 1000:1000
WORKDIR /workspace
VOLUME ["/data"]
EXPOSE 4096
ENTRYPOINT ["/usr/local/bin/opencode", "serve", "--hostname", "0.0.0.0", "--port", "4096"]
DOCKERFILE
echo "LABEL open-persona.inputs=$hash" >>"$ctx/Dockerfile"

docker build -q -t "$image" "$ctx" >/dev/null
echo "built $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
