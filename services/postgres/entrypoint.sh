#!/bin/sh
# The offline stand-in's entrypoint (services/postgres/build-image.sh): the part of the official
# image's docker-entrypoint.sh that docker-stack.yml relies on. On an empty PGDATA it runs
# initdb with POSTGRES_USER (default postgres) as the superuser, whose password comes from
# POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE, creates POSTGRES_DB (default: the user's name)
# and lets other hosts in with that password (scram-sha-256); then it runs the server with the
# given arguments (`postgres -c name=value …`, as the official image takes them).
# It runs as the image's postgres user (uid 999, the official image's): nothing here needs root.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

# `-c x=y …` alone means `postgres -c x=y …`, as in the official image.
case "${1:-postgres}" in -*) set -- postgres "$@" ;; esac
[ "$#" -gt 0 ] || set -- postgres
if [ "$1" != postgres ]; then exec "$@"; fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    [ -z "${POSTGRES_PASSWORD:-}" ] || { echo "set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE, not both" >&2; exit 1; }
    POSTGRES_PASSWORD="$(cat "$POSTGRES_PASSWORD_FILE")"
  fi
  [ -n "${POSTGRES_PASSWORD:-}" ] || { echo "the database is uninitialized: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE" >&2; exit 1; }
  user="${POSTGRES_USER:-postgres}"
  db="${POSTGRES_DB:-$user}"
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA"
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb -D "$PGDATA" --username="$user" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  # The stand-in has no LLVM (PostgreSQL would only log that it cannot load it).
  printf "listen_addresses = '*'\njit = off\n" >>"$PGDATA/postgresql.auto.conf"
  if [ "$db" != postgres ]; then
    # Single-user mode: no server (and no socket) needed to create the database.
    printf 'CREATE DATABASE "%s";\n' "$(printf %s "$db" | sed 's/"/""/g')" | postgres --single -j -D "$PGDATA" postgres >/dev/null
  fi
  echo "initialized $PGDATA (user $user, database $db)"
fi
exec "$@"
