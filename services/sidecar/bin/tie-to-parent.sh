#!/bin/sh
# Runs "$@" and ends it when this script's stdin reaches EOF, i.e. when the process that
# spawned us with a pipe on stdin is gone, however it died (SIGKILL and crashes included).
# Node has no parent-death signal for its children; a pipe is the portable substitute.
#   tie-to-parent.sh [--cgroup CGROUP_PROCS_FILE]... COMMAND [ARG]...
# Each --cgroup: this script joins that cgroup first, so COMMAND and everything it forks
# start inside it (runners/cgroup-limits.ts).
while [ "$1" = "--cgroup" ]; do
  echo $$ > "$2" || { echo "tie-to-parent: cannot join cgroup $2" >&2; exit 126; }
  shift 2
done
exec 3<&0
"$@" </dev/null &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT HUP
(
  while read -r _ <&3; do :; done
  kill -TERM "$child" 2>/dev/null
  sleep 5
  kill -KILL "$child" 2>/dev/null
) &
watcher=$!
code=0
# `wait` returns early when a trapped signal arrives: keep waiting until the child is gone.
while kill -0 "$child" 2>/dev/null; do
  wait "$child"
  code=$?
done
kill "$watcher" 2>/dev/null
exit "$code"
