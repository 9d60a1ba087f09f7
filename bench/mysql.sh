#!/usr/bin/env bash
# bench/mysql.sh — sysbench against MariaDB directly and through sluice.
#
# How to run:   bash bench/mysql.sh
# Knobs (env):  DURATION=10 (seconds per run)  ROUNDS=3  THREADS="8 32"  POOL=16
#               TESTS="oltp_point_select oltp_read_only"  TABLES=4  TABLE_SIZE=100000
#               PS_MODE=auto (sysbench --db-ps-mode: auto = server-side prepared
#               statements, disable = text queries)
#               MODE=transaction (sluice's pool_mode: transaction | session)
#               SLUICE_PREFIX="perf record -g -o /tmp/sluice.perf --" (runs sluice under it)
#
# Starts its own MariaDB (temp dir, free port), sluice (release build, transaction mode, a
# server pool of $POOL) and HAProxy in TCP mode (the Debian package: a byte forwarder that
# does no protocol work, so its ratio is the floor any proxy pays on this machine), clients
# logging in with mysql_native_password over plaintext TCP. Each round runs every (test,
# threads) case against the three targets back to back, in an order that rotates per
# round, so machine noise hits all alike. Prints the median TPS per target and the ratios
# sluice/direct and haproxy/direct, and fails a run whose sysbench reports errors.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
THREADS="${THREADS:-8 32}"
POOL="${POOL:-16}"
TESTS="${TESTS:-oltp_point_select oltp_read_only}"
TABLES="${TABLES:-4}"
TABLE_SIZE="${TABLE_SIZE:-100000}"
PS_MODE="${PS_MODE:-auto}"
MODE="${MODE:-transaction}"
PASSWORD="bench-pw"

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
need sysbench sysbench
need haproxy haproxy
need mariadbd mariadb-server
need mariadb mariadb-client

WORK="$(mktemp -d /tmp/sluice-bench-my.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    sleep 1
    rm -rf "$WORK"
}
trap cleanup EXIT

build_sluice

echo "== starting MariaDB"
MYPORT="$(free_port)"
USER_FLAG="--user=$(id -un)"
mariadb-install-db --no-defaults --auth-root-authentication-method=normal --skip-test-db \
    --datadir="$WORK/data" "$USER_FLAG" >/dev/null
mariadbd --no-defaults --datadir="$WORK/data" --port="$MYPORT" --socket="$WORK/mysqld.sock" \
    --pid-file="$WORK/mysqld.pid" --bind-address=127.0.0.1 --skip-log-bin \
    --innodb-buffer-pool-size=512M --max-connections=500 --innodb-flush-log-at-trx-commit=2 \
    "$USER_FLAG" >"$WORK/mariadb.log" 2>&1 &
PIDS+=($!)
wait_port "$MYPORT"
my() { mariadb --no-defaults -h 127.0.0.1 -P "$MYPORT" -u root "$@"; }
for _ in $(seq 1 100); do my -e "SELECT 1" >/dev/null 2>&1 && break; sleep 0.1; done
my -e "CREATE DATABASE bench; CREATE USER 'bench'@'%' IDENTIFIED BY '$PASSWORD'; \
       GRANT ALL ON bench.* TO 'bench'@'%';"

SB_COMMON=(--db-driver=mysql --mysql-host=127.0.0.1 --mysql-user=bench
    "--mysql-password=$PASSWORD" --mysql-db=bench --mysql-ssl=off
    "--tables=$TABLES" "--table-size=$TABLE_SIZE")
echo "== sysbench prepare: $TABLES tables of $TABLE_SIZE rows"
sysbench oltp_read_only "${SB_COMMON[@]}" --mysql-port="$MYPORT" --threads=4 prepare >/dev/null

echo "== starting sluice (pool $POOL, $MODE mode)"
SLUICE_PORT="$(free_port)"
NATIVE="$(printf '%s\n' "$PASSWORD" | "$SLUICE" passwd --mysql | tail -1)"
SCRAM="$(printf '%s\n' "$PASSWORD" | "$SLUICE" passwd | tail -1)"
cat >"$WORK/sluice.toml" <<EOF
[listeners]
mysql = "127.0.0.1:$SLUICE_PORT"
[users.bench]
password = "$SCRAM"
mysql_native_password = "$NATIVE"
[backends.maria]
kind = "mysql"
host = "127.0.0.1"
port = $MYPORT
user = "bench"
password = "$PASSWORD"
[routes.bench]
backend = "maria"
database = "bench"
pool_mode = "$MODE"
pool_size = $POOL
max_clients = 500
EOF
${SLUICE_PREFIX:-} "$SLUICE" --config "$WORK/sluice.toml" >"$WORK/sluice.log" 2>&1 &
PIDS+=($!)
wait_port "$SLUICE_PORT"

HAPROXY_PORT="$(free_port)"
cat >"$WORK/haproxy.cfg" <<EOF
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
listen mariadb
    bind 127.0.0.1:$HAPROXY_PORT
    server maria 127.0.0.1:$MYPORT
EOF
"$(command -v haproxy || echo /usr/sbin/haproxy)" -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
wait_port "$HAPROXY_PORT"

declare -A PORT=([direct]="$MYPORT" [sluice]="$SLUICE_PORT" [haproxy]="$HAPROXY_PORT")
RESULTS="$WORK/results.txt"
: >"$RESULTS"
run_one() { # target test threads
    local out tps errors
    out="$(sysbench "$2" "${SB_COMMON[@]}" --mysql-port="${PORT[$1]}" --threads="$3" \
        --time="$DURATION" --db-ps-mode="$PS_MODE" --rand-type=uniform run 2>&1)" || true
    tps="$(echo "$out" | awk '/transactions:/{gsub(/\(/, "", $3); print $3}')"
    errors="$(echo "$out" | awk '/ignored errors:/{print $3}')"
    if [ -z "$tps" ] || [ "${errors:-1}" != 0 ] || echo "$out" | grep -q FATAL; then
        echo "   $1 $2 t=$3: FAILED: $(echo "$out" | grep -m1 -E 'FATAL|error' || true)" >&2
        [ "$1" = sluice ] && tail -3 "$WORK/sluice.log" >&2
        tps="fail"
    fi
    echo "$2 $3 $1 $tps" >>"$RESULTS"
    printf '   %-7s %-18s t=%-3s %s\n' "$1" "$2" "$3" "$tps"
}

ORDERS=("direct sluice haproxy" "sluice haproxy direct" "haproxy direct sluice")
for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round/$ROUNDS"
    order="${ORDERS[$(((round - 1) % 3))]}"
    for test in $TESTS; do
        for threads in $THREADS; do
            for target in $order; do run_one "$target" "$test" "$threads"; done
        done
    done
done

echo
echo "== median TPS over $ROUNDS rounds of ${DURATION}s (pool $POOL, $MODE mode, ps-mode $PS_MODE, $(nproc) cores)"
python3 - "$RESULTS" <<'EOF'
import statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    test, threads, target, tps = line.split()
    runs[(test, int(threads), target)].append(tps)
def median(vals):
    ok = [float(v) for v in vals if v != "fail"]
    return statistics.median(ok) if len(ok) == len(vals) and ok else None
fmt = lambda v: f"{v:10.0f}" if v is not None else "      fail"
ratio = lambda a, b: f"{a / b:6.2f}" if a is not None and b else "   n/a"
print(f"{'test':18} {'threads':>7} {'direct':>10} {'sluice':>10} {'haproxy':>10} {'s/dir':>6} {'h/dir':>6} {'s/h':>6}")
for key in sorted({k[:2] for k in runs}):
    d, s, h = (median(runs[key + (t,)]) for t in ("direct", "sluice", "haproxy"))
    print(f"{key[0]:18} {key[1]:7d} {fmt(d)} {fmt(s)} {fmt(h)} {ratio(s, d)} {ratio(h, d)} {ratio(s, h)}")
EOF
