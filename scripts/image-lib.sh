# What the image build scripts (services/*/build-image.sh) share. Sourced, not run.
# Each script builds its image either from its Dockerfile (upstream base images: needs a
# registry) or offline, as a stand-in FROM scratch made of files this machine already has.

# build_mode MODE PROBE_IMAGE: auto → dockerfile when the registry knows PROBE_IMAGE, else local.
# (A manifest look-up, not a pull: probing must not download a multi-GB base image.)
build_mode() {
  local mode="$1" probe="$2"
  if [ "$mode" = auto ]; then
    if timeout 20 docker manifest inspect "$probe" >/dev/null 2>&1; then mode=dockerfile; else mode=local; fi
  fi
  case "$mode" in
    dockerfile | local) echo "$mode" ;;
    *) echo "build mode must be auto, dockerfile or local, not '$mode'" >&2; return 1 ;;
  esac
}

# image_current IMAGE HASH: IMAGE exists and was built from inputs that hash to HASH.
image_current() {
  [ "$(docker image inspect -f '{{index .Config.Labels "open-persona.inputs"}}' "$1" 2>/dev/null)" = "$2" ]
}

# inputs_hash: a short hash of what is read on stdin (a listing of an image's inputs).
inputs_hash() { sha256sum | cut -c1-16; }

# listing PATH…: path, size and mtime of every file under each PATH but Python's bytecode caches
# (fast on GBs, unlike hashing contents; for trees that only an installer replaces).
listing() { find "$@" -name __pycache__ -prune -o -type f -printf '%p %s %T@\n' | LC_ALL=C sort; }

# copy_tree SRC DEST: hard links where possible (GBs of packages in a second), else a copy.
# Never write into DEST's files afterwards: they may be the source's own.
copy_tree() {
  mkdir -p "$(dirname "$2")"
  cp -al "$1" "$2" 2>/dev/null || { rm -rf "$2"; cp -a "$1" "$2"; }
}

# copy_libs ROOTFS [FROM=TO…] < FILES (NUL-separated): every shared library the FILEs link
# against (resolved by ldd, the same lookup the loader does) into ROOTFS, at the same absolute
# path, or under TO for one under FROM (a tree the image holds elsewhere). Libraries already
# there are kept; unresolved ones left out (optional backends that nothing here loads).
copy_libs() {
  local rootfs="$1" lib dest map
  shift
  # Only ldd's indented lines name libraries (with several files it also prints "file:" lines).
  for lib in $(xargs -0 -r -n 64 ldd 2>/dev/null | grep -E '^\s' | grep -oE '/[^ ]+' | sort -u); do
    # $ORIGIN lookups come back as …/lib/../../x: normalized without resolving symlinks (the
    # loader asks for /lib/x86_64-linux-gnu/…, not for where a merged /usr keeps it).
    lib="$(realpath -sm "$lib")"
    dest="$lib"
    for map in "$@"; do [[ "$lib" == "${map%%=*}"/* ]] && dest="${map#*=}${lib#"${map%%=*}"}"; done
    [ -e "$rootfs$dest" ] && continue
    mkdir -p "$rootfs$(dirname "$dest")"
    cp -L "$lib" "$rootfs$dest"
  done
}

# add_busybox ROOTFS: a static busybox as /bin/sh and friends (healthchecks, `docker exec`).
add_busybox() {
  local busybox applet
  busybox="$(command -v busybox || true)"
  # A dynamic busybox would need its own libraries in the image.
  if [ -z "$busybox" ] || ! { ldd "$busybox" 2>&1 || true; } | grep -q 'not a dynamic'; then
    echo "a static busybox is needed (Debian: apt-get install busybox-static)" >&2
    return 1
  fi
  mkdir -p "$1/bin"
  cp "$busybox" "$1/bin/busybox"
  for applet in $("$busybox" --list); do
    [ -e "$1/bin/$applet" ] || ln -s busybox "$1/bin/$applet"
  done
}

# add_base ROOTFS: /tmp, CA certificates, and root plus uid 1000 as users.
add_base() {
  mkdir -p "$1"/{etc/ssl/certs,tmp}
  chmod 1777 "$1/tmp"
  [ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/bin/sh\n%s:x:1000:1000::/home/%s:/bin/sh\n' "${2:-user}" "${2:-user}" >"$1/etc/passwd"
  printf 'root:x:0:\n%s:x:1000:\n' "${2:-user}" >"$1/etc/group"
}

# import_rootfs ROOTFS IMAGE CHANGE…: IMAGE made of ROOTFS alone, with Dockerfile-style
# CHANGEs (ENV, CMD, LABEL…). `docker import` writes the files once; `docker build` would send,
# copy and commit them (twice as long for the GBs of Open WebUI).
import_rootfs() {
  local rootfs="$1" image="$2" change args=() old
  shift 2
  for change in "$@"; do args+=(--change "$change"); done
  old="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
  tar -C "$rootfs" -c . | docker import "${args[@]}" - "$image" >/dev/null
  # The image this one replaces, unless something still uses it (rmi without -f refuses).
  [ -n "$old" ] && docker rmi "$old" >/dev/null 2>&1 || true
  echo "built $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
}
