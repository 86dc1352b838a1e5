#!/usr/bin/env bash
# PostgreSQL for the replica tests (DATABASE_URL): Debian's package, its default cluster
# started, and a role that may create a database per test file. Idempotent.
# Prints nothing when all is there already.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
as_postgres() { as_root runuser -u postgres -- "$@"; }

ROLE=open_persona_test
PASSWORD=open-persona-test
# Each replica test holds a connection per running turn (slot + session lock), several replicas at once.
MAX_CONNECTIONS=500

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "postgres-setup: installing postgresql"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
fi

cluster="$(pg_lsclusters --no-header | awk 'NR==1 {print $1" "$2}')"
if [ -z "$cluster" ]; then
  version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
  as_root pg_createcluster "$version" main >/dev/null
  cluster="$version main"
fi
read -r version name <<<"$cluster"

if ! pg_lsclusters --no-header | awk -v v="$version" -v n="$name" '$1==v && $2==n {print $4}' | grep -q online; then
  echo "postgres-setup: starting PostgreSQL $version/$name"
  as_root pg_ctlcluster "$version" "$name" start
fi

current="$(as_postgres psql -qtAc 'SHOW max_connections')"
if [ "$current" -lt "$MAX_CONNECTIONS" ]; then
  echo "postgres-setup: max_connections $current -> $MAX_CONNECTIONS (restart)"
  as_postgres psql -qc "ALTER SYSTEM SET max_connections = $MAX_CONNECTIONS" >/dev/null
  as_root pg_ctlcluster "$version" "$name" restart
fi

if [ "$(as_postgres psql -qtAc "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != 1 ]; then
  as_postgres psql -qc "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD'" >/dev/null
fi
