#!/usr/bin/env bash
# Builds the PostgreSQL image docker-stack.local.yml runs ($POSTGRES_IMAGE, default
# open-persona-postgres:15): the database the sidecar replicas share (DATABASE_URL).
#   POSTGRES_IMAGE_BUILD=dockerfile  services/postgres/Dockerfile: the official postgres:15 (needs Docker Hub)
#   POSTGRES_IMAGE_BUILD=local       an offline stand-in FROM scratch: this machine's PostgreSQL 15
#                                    (Debian's package, scripts/postgres-setup.sh installs it), the
#                                    libraries it links against, a static busybox, and entrypoint.sh
#                                    (the official image's POSTGRES_USER/_DB/_PASSWORD[_FILE] set-up)
#   POSTGRES_IMAGE_BUILD=auto        (default) dockerfile when Docker Hub answers, else local
# A local build is skipped when the image was built from the same inputs (label open-persona.inputs).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
. "$root/scripts/image-lib.sh"

major=15
image="${POSTGRES_IMAGE:-open-persona-postgres:$major}"
mode="$(build_mode "${POSTGRES_IMAGE_BUILD:-auto}" "postgres:$major")"

if [ "$mode" = dockerfile ]; then
  echo "building $image from services/postgres/Dockerfile"
  exec docker build -f "$here/Dockerfile" --build-arg "POSTGRES_VERSION=$major" -t "$image" "$here"
fi

pglib="/usr/lib/postgresql/$major"
pgshare="/usr/share/postgresql/$major"
[ -x "$pglib/bin/postgres" ] || { echo "PostgreSQL $major is not installed here ($pglib): run scripts/postgres-setup.sh" >&2; exit 1; }
# The server and the client tools an operator or a healthcheck uses, not the whole bin/.
bins=(postgres initdb pg_ctl pg_isready psql pg_dump pg_dumpall pg_restore)
locale=/usr/lib/locale/C.utf8

hash="$( { cat "$0" "$here/entrypoint.sh" "$root/scripts/image-lib.sh"; listing "$pglib" "$pgshare" /usr/share/zoneinfo "$locale" "$(command -v busybox)"; } | inputs_hash)"
if image_current "$image" "$hash"; then
  echo "$image is up to date (local stand-in, inputs $hash)"
  exit 0
fi

echo "building $image offline from local files (PostgreSQL $("$pglib/bin/postgres" --version | awk '{print $3}'))"
t0=$SECONDS
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
rootfs="$ctx/rootfs"
# At Debian's paths: its binaries find their share directory and modules there (compiled in).
mkdir -p "$rootfs$pglib/bin"
for b in "${bins[@]}"; do cp -L "$pglib/bin/$b" "$rootfs$pglib/bin/$b"; done
# Modules (encodings, procedural languages, contrib) but not the LLVM JIT (entrypoint.sh turns jit off).
copy_tree "$pglib/lib" "$rootfs$pglib/lib"
rm -rf "$rootfs$pglib/lib"/{llvmjit.so,llvmjit_types.bc,bitcode}
copy_tree "$pgshare" "$rootfs$pgshare"
# Debian builds with the system's time zone data (--with-system-tzdata).
copy_tree /usr/share/zoneinfo "$rootfs/usr/share/zoneinfo"
copy_tree "$locale" "$rootfs$locale"
find "$rootfs$pglib" -type f \( -perm -u+x -o -name '*.so' \) -print0 | copy_libs "$rootfs"
add_busybox "$rootfs"
add_base "$rootfs" postgres
# The official image's user and group (uid/gid 999): a volume initialized by one works with the other.
printf 'root:x:0:0:root:/root:/bin/sh\npostgres:x:999:999::/var/lib/postgresql:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\npostgres:x:999:\n' >"$rootfs/etc/group"
mkdir -p "$rootfs/usr/local/bin"
install -m 0755 "$here/entrypoint.sh" "$rootfs/usr/local/bin/docker-entrypoint.sh"
# The data directory (a named volume takes its owner from here) and the socket directory.
mkdir -p "$rootfs/var/lib/postgresql/data" "$rootfs/var/run/postgresql"
chown -R 999:999 "$rootfs/var/lib/postgresql" "$rootfs/var/run/postgresql"
chmod 700 "$rootfs/var/lib/postgresql/data"
chmod 2775 "$rootfs/var/run/postgresql"

import_rootfs "$rootfs" "$image" \
  "ENV PATH=$pglib/bin:/usr/local/bin:/bin PGDATA=/var/lib/postgresql/data LANG=C.UTF-8 TZ=UTC" \
  "LABEL open-persona.postgres-build=local open-persona.inputs=$hash" \
  "USER 999:999" \
  "VOLUME /var/lib/postgresql/data" \
  "EXPOSE 5432" \
  'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
  'CMD ["postgres"]'
echo "in $((SECONDS - t0)) s"
