#!/usr/bin/env bash
# Runs a command against a throwaway PostgreSQL cluster, then removes the cluster.
#
#   scripts/ci-postgres.sh npm test
#   scripts/ci-postgres.sh npx vitest run test/store.test.ts
#
# Installs Debian's `postgresql` package when its binaries are missing (needs root), creates a
# cluster in a temp dir (as the `postgres` user when run as root: initdb refuses root), trusts
# loopback connections only, starts it on a free 127.0.0.1 port, creates the database `meshca_test`,
# exports MESHCA_TEST_POSTGRES_URL for the command and stops the cluster when the command ends,
# however it ends.
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 COMMAND [ARGS...]  (runs COMMAND with MESHCA_TEST_POSTGRES_URL set)" >&2
  exit 2
fi

find_bindir() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; fi
  done | sort -V | tail -n 1
}

bindir="$(find_bindir)"
if [ -z "$bindir" ]; then
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    bindir="$(dirname "$(command -v initdb)")"
  else
    echo "installing Debian package: postgresql"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
    bindir="$(find_bindir)"
  fi
fi
[ -n "$bindir" ] || { echo "no PostgreSQL binaries found after installing postgresql" >&2; exit 1; }

# initdb and postgres refuse to run as root: run them as the postgres user in that case.
as_owner=()
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin postgres
  as_owner=(runuser -u postgres --)
fi

cluster="$(mktemp -d "${TMPDIR:-/tmp}/meshca-pg.XXXXXX")"
[ "${#as_owner[@]}" -eq 0 ] || chown postgres "$cluster"
data="$cluster/data"

stop_cluster() {
  if [ -f "$data/postmaster.pid" ]; then
    "${as_owner[@]}" "$bindir/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$cluster"
}
trap stop_cluster EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port="$(node -e "const s=require('node:net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")"

"${as_owner[@]}" "$bindir/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --no-locale --no-sync >/dev/null
# Loopback only (trust auth must never be reachable from elsewhere); socket in the temp dir so no
# system directory is needed. Unsafe-for-production settings make the throwaway cluster faster.
"${as_owner[@]}" "$bindir/pg_ctl" -D "$data" -l "$cluster/postgres.log" -w -t 60 start \
  -o "-p $port -k $cluster -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=300" >/dev/null \
  || { cat "$cluster/postgres.log" >&2; exit 1; }
"${as_owner[@]}" "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qAt -c 'CREATE DATABASE meshca_test' >/dev/null

export MESHCA_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/meshca_test"
echo "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') at $MESHCA_TEST_POSTGRES_URL (cluster $cluster)"
# Not exec: the EXIT trap must run after the command to stop the cluster.
"$@"
