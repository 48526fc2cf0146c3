#!/usr/bin/env bash
# Job claim latency with 1,000 queued jobs on SQLite and on PostgreSQL: starts a throwaway
# PostgreSQL cluster (Debian's postgresql; initdb in a temp dir, as `nobody` when root,
# fsync on as in production) on a free port and runs `cargo bench --bench job_claim`
# (proxy/benches/job_claim.rs) against both.
#
# Usage: scripts/bench/jobs.sh [-h]
# Environment:
#   MEDIA_EDGE_BENCH_CLAIMS=2000   timed claims per run
#   KEEP_TMP=1                     keep the cluster's folder (and its log)
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,12p' "$0"; exit 0
fi

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
[[ -x "$PGBIN/initdb" ]] || { echo "install Debian's postgresql (scripts/setup.sh --with-test-tools)" >&2; exit 1; }
TMP="$(mktemp -d /tmp/jobs-bench.XXXXXX)"
chmod 755 "$TMP"
AS=()
if [[ "$(id -u)" == 0 ]]; then
  chown nobody: "$TMP"
  AS=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
fi
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
PID=""
cleanup() {
  [[ -n "$PID" ]] && kill -QUIT "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  [[ "${KEEP_TMP:-}" == 1 ]] && echo "kept $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT

"${AS[@]}" "$PGBIN/initdb" -D "$TMP/pg" -U postgres -A trust -E UTF8 >/dev/null
"${AS[@]}" "$PGBIN/postgres" -D "$TMP/pg" -p "$PORT" -k "$TMP" \
  -c listen_addresses=127.0.0.1 >"$TMP/postgres.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
  "$PGBIN/pg_isready" -h 127.0.0.1 -p "$PORT" -q && break
  sleep 0.1
done
"$PGBIN/pg_isready" -h 127.0.0.1 -p "$PORT" -q || { cat "$TMP/postgres.log" >&2; exit 1; }

cd "$ROOT"
MEDIA_EDGE_BENCH_PG="postgres://postgres@127.0.0.1:$PORT/postgres" \
  cargo bench -p media-edge --bench job_claim 2>/dev/null
