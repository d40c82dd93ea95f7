#!/usr/bin/env bash
# Print `export DATABASE_URL=... REDIS_URL=...` for the test suite: the given URLs when set, else the
# services on 127.0.0.1:5432 and :6379 when they answer, else throwaway ones started here under var/.
# Usage: eval "$(scripts/services.sh)"
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD/var/services"
mkdir -p "$root"
# Two checkouts (a developer's and CI's clone) must never share a test database or Redis index.
tag=$(printf '%s' "$PWD" | sha256sum | cut -c1-8)
redis_db=$(( 1 + 16#${tag:0:4} % 15 ))

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
  local p
  for p in $(seq "$1" $(( $1 + 50 ))); do port_open "$p" || { echo "$p"; return; }; done
  echo "services: no free port near $1" >&2; exit 1
}

if [ -z "${DATABASE_URL:-}" ]; then
  if port_open 5432 && psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
    DATABASE_URL="postgres://postgres@127.0.0.1:5432/rtv_$tag"
  else
    initdb_bin=$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | tail -1 || true)
    [ -n "$initdb_bin" ] || { echo "services: no PostgreSQL server and no initdb to start one" >&2; exit 1; }
    bindir=$(dirname "$initdb_bin")
    port=$(free_port 55432)
    data="$root/pg"
    if [ ! -f "$data/PG_VERSION" ]; then
      rm -rf "$data"; mkdir -p "$data"
      if [ "$(id -u)" = 0 ]; then
        chown -R postgres "$root"
        runuser -u postgres -- "$bindir/initdb" -D "$data" --auth=trust -U postgres >/dev/null
      else
        "$bindir/initdb" -D "$data" --auth=trust -U postgres >/dev/null
      fi
    fi
    as_pg=(); [ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)
    "${as_pg[@]}" "$bindir/pg_ctl" -D "$data" -o "-p $port -k /tmp -c listen_addresses=127.0.0.1" -l "$data/log" -w start >/dev/null
    echo "services: started a throwaway PostgreSQL on 127.0.0.1:$port ($data)" >&2
    DATABASE_URL="postgres://postgres@127.0.0.1:$port/rtv_$tag"
  fi
fi

if [ -z "${REDIS_URL:-}" ]; then
  if port_open 6379 && { command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }; then
    REDIS_URL="redis://127.0.0.1:6379/$redis_db"
  else
    command -v redis-server >/dev/null || { echo "services: no Redis server and no redis-server to start one" >&2; exit 1; }
    port=$(free_port 56379)
    redis-server --daemonize yes --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      --dir "$root" --logfile "$root/redis.log" --pidfile "$root/redis.pid" >/dev/null
    for _ in $(seq 50); do port_open "$port" && break; sleep 0.1; done
    echo "services: started a throwaway Redis on 127.0.0.1:$port" >&2
    REDIS_URL="redis://127.0.0.1:$port/$redis_db"
  fi
fi

echo "export DATABASE_URL='$DATABASE_URL' REDIS_URL='$REDIS_URL'"
