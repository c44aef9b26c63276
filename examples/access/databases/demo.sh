#!/usr/bin/env bash
# Database login with Sigil certificates, all on this machine (docs/access/databases.md):
# a dev broker, a PostgreSQL 15 cluster whose only TCP rule is `hostssl all all 127.0.0.1/32 cert`
# with a server certificate from `sigil db server-cert`, then `sigil db cert` and psql.
#
# Needs the sigil binary (SIGIL, default target/debug/sigil) and the PostgreSQL 15 server
# (PG_BIN, default /usr/lib/postgresql/15/bin; apt-get install postgresql-15). As root,
# PostgreSQL runs as user postgres. Everything lives in a temp directory removed at exit.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
HERE="$ROOT/examples/access/databases"
SIGIL="${SIGIL:-$ROOT/target/debug/sigil}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
[ -x "$SIGIL" ] || { echo "no sigil binary at $SIGIL: cargo build -p sigil" >&2; exit 1; }
[ -x "$PG_BIN/initdb" ] || { echo "no PostgreSQL 15 server in $PG_BIN: apt-get install postgresql-15" >&2; exit 1; }

WORK="$(mktemp -d /tmp/sigil-db-demo-XXXXXX)"
chmod 0711 "$WORK"                      # postgres must reach its directory inside
BROKER_PID=""
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  [ -f "$WORK/pg/data/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true
  [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

echo "== dev broker"
BPORT="$(port)"
"$SIGIL" server --dev --data-dir "$WORK/broker" --listen "127.0.0.1:$BPORT" >"$WORK/broker.log" 2>&1 &
BROKER_PID=$!
for _ in $(seq 100); do [ -f "$WORK/broker/admin.identity" ] && break; sleep 0.1; done
export SIGIL_ADDR="127.0.0.1:$BPORT" SIGIL_IDENTITY="$WORK/broker/admin.identity"
"$SIGIL" apply -f "$HERE/resources.yaml"
for bot in orders-db orders-app; do
  "$SIGIL" token create --bot "$bot" --name "$bot-demo" >"$WORK/$bot.token"
  "$SIGIL" join --token-file "$WORK/$bot.token" --ca-file "$WORK/broker/tls-ca.pem" --out "$WORK/$bot.identity"
done

echo "== PostgreSQL with certificate authentication"
mkdir "$WORK/pg"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK/pg"
as_pg "$PG_BIN/initdb" -D "$WORK/pg/data" -U postgres -A trust --no-sync >/dev/null
OWNER=(); [ "$(id -u)" = 0 ] && OWNER=(--owner postgres)
"$SIGIL" db server-cert --identity "$WORK/orders-db.identity" --names 127.0.0.1,localhost --dir "$WORK/pg/tls" "${OWNER[@]}"
printf 'local all postgres trust\nhostssl all all 127.0.0.1/32 cert\n' >"$WORK/pg/hba.conf"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK/pg/hba.conf"
PGPORT="$(port)"
as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w start -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $WORK/pg \
  -c hba_file=$WORK/pg/hba.conf -c ssl=on -c ssl_cert_file=$WORK/pg/tls/server.crt -c ssl_key_file=$WORK/pg/tls/server.key \
  -c ssl_ca_file=$WORK/pg/tls/client-ca.pem" >/dev/null
as_pg "$PG_BIN/psql" -h "$WORK/pg" -p "$PGPORT" -U postgres -qc "CREATE ROLE orders_app LOGIN"

echo "== sigil db cert, then psql with the generated conninfo (sslmode=verify-full)"
"$SIGIL" db cert --identity "$WORK/orders-app.identity" --protocol postgres --user orders_app \
  --host 127.0.0.1 --port "$PGPORT" --database postgres --dir "$WORK/app-db"
"$PG_BIN/psql" "$(cat "$WORK/app-db/conninfo")" -Atc "SELECT 'logged in as ' || current_user"

echo "== the same certificate as another role"
if "$PG_BIN/psql" "$(cat "$WORK/app-db/conninfo") user=postgres" -Atc "SELECT 1" 2>"$WORK/err"; then
  echo "UNEXPECTED: logged in as postgres" >&2; exit 1
fi
echo "refused: $(tail -1 "$WORK/err")"
