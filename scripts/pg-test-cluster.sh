#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests of the PostgreSQL backend.
#
#   scripts/pg-test-cluster.sh start   # creates and starts it if needed, prints its URL
#   scripts/pg-test-cluster.sh url     # prints the URL of the running cluster (fails if none)
#   scripts/pg-test-cluster.sh stop    # stops it and deletes its files
#
# One cluster per working copy, in a temp dir (FOREMAN_PG_TEST_DIR overrides it), on a
# free loopback port, owned by the `postgres` user when run as root (initdb refuses
# root; the user is created if missing). `start` is idempotent and safe to run from many
# test processes at once (a lock serialises them), so every test binary may call it.
# fsync stays on: durability is what the tests are about.
#
# The cluster stops itself: a watchdog stops it once nobody has called `start` or `url`
# for FOREMAN_PG_TEST_IDLE seconds (default 300, read when the cluster starts), so
# `cargo nextest run` alone leaves no server behind for long; `scripts/test` starts it
# with a longer idle time and stops it right after the run.
#
# Binaries: initdb, pg_ctl and postgres from PATH, /usr/local/bin or
# /usr/lib/postgresql/*/bin; when none is found and apt-get is there (root), the Debian
# `postgresql` package is installed.
set -euo pipefail

command=${1:-}
repo_root=$(cd "$(dirname "$0")/.." && pwd)
key=$(printf '%s' "$repo_root" | cksum | cut -d' ' -f1)
dir=${FOREMAN_PG_TEST_DIR:-${TMPDIR:-/tmp}/foreman-pg-test-$key}
data=$dir/data
idle=${FOREMAN_PG_TEST_IDLE:-300}

find_bin_dir() {
  local candidate
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
    return
  fi
  for candidate in /usr/local/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x $candidate/initdb && -x $candidate/pg_ctl && -x $candidate/postgres ]]; then
      echo "$candidate"
      return
    fi
  done
  return 1
}

bin_dir() {
  local found
  if found=$(find_bin_dir); then
    echo "$found"
    return
  fi
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "PostgreSQL not found; installing the Debian package postgresql" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 \
      || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
    find_bin_dir && return
  fi
  echo "PostgreSQL is not installed (no initdb/pg_ctl on PATH, in /usr/local/bin or /usr/lib/postgresql/*/bin); install the postgresql package" >&2
  return 1
}

# Runs a command as the cluster's owner: `postgres` when we are root, else ourselves.
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

ensure_owner_user() {
  if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
  fi
}

free_port() {
  python3 - <<'EOF' 2>/dev/null && return
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
EOF
  local port
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  echo "no free port found" >&2
  return 1
}

is_running() {
  [[ -f $dir/port && -f $data/postmaster.pid ]] && as_owner "$(cat "$dir/bin")/pg_ctl" status -D "$data" >/dev/null 2>&1
}

print_url() {
  echo "postgres://postgres@127.0.0.1:$(cat "$dir/port")/postgres"
}

# Stops the cluster once `$dir/last-used` is older than the idle time; ends with the
# cluster it was started for (`$1`, its port).
watchdog() {
  local mine=$1
  while sleep 10; do
    [[ -d $data && $(cat "$dir/port" 2>/dev/null) == "$mine" ]] || exit 0
    local last now
    last=$(stat -c %Y "$dir/last-used" 2>/dev/null || echo 0)
    now=$(date +%s)
    if ((now - last > idle)); then
      exec 9>"$dir/lock"
      flock 9
      last=$(stat -c %Y "$dir/last-used" 2>/dev/null || echo 0)
      if (($(date +%s) - last > idle)); then
        stop_cluster
        exit 0
      fi
      flock -u 9
    fi
  done
}

stop_cluster() {
  if [[ -f $data/postmaster.pid && -f $dir/bin ]]; then
    as_owner "$(cat "$dir/bin")/pg_ctl" stop -D "$data" -m fast -w >/dev/null 2>&1 || true
  fi
  rm -rf "$data" "$dir/port" "$dir/bin" "$dir/log"
}

start_cluster() {
  mkdir -p "$dir"
  exec 9>"$dir/lock"
  flock 9
  touch "$dir/last-used"
  if is_running; then
    print_url
    return
  fi
  # Left over from a cluster that died or a start that failed: start afresh.
  rm -rf "$data"
  local bins port
  bins=$(bin_dir)
  ensure_owner_user
  port=$(free_port)
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres "$dir"
    chmod 755 "$dir"
  fi
  as_owner "$bins/initdb" -D "$data" --username=postgres --auth=trust --encoding=UTF8 \
    --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || as_owner "$bins/initdb" -D "$data" --username=postgres --auth=trust --encoding=UTF8 \
      --no-locale >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  cat >>"$data/postgresql.conf" <<EOF
# foreman test cluster
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$data'
fsync = on
synchronous_commit = on
max_connections = 400
shared_buffers = 64MB
log_min_messages = warning
EOF
  echo "$bins" >"$dir/bin"
  echo "$port" >"$dir/port"
  if ! as_owner "$bins/pg_ctl" start -D "$data" -l "$data/server.log" -w -t 60 >/dev/null 9>&-; then
    cat "$data/server.log" >&2 || true
    exit 1
  fi
  # The watchdog outlives this script; it must not hold the lock or the caller's pipes.
  flock -u 9
  ( exec 9>&- ; watchdog "$port" ) </dev/null >/dev/null 2>&1 &
  disown
  print_url
}

case $command in
  start) start_cluster ;;
  url)
    if is_running; then
      touch "$dir/last-used"
      print_url
    else
      echo "no test cluster is running (scripts/pg-test-cluster.sh start)" >&2
      exit 1
    fi
    ;;
  stop)
    mkdir -p "$dir"
    exec 9>"$dir/lock"
    flock 9
    stop_cluster
    ;;
  *)
    echo "usage: $0 start|url|stop" >&2
    exit 2
    ;;
esac
