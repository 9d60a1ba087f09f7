#!/usr/bin/env bash
# bench/mysql.sh — sysbench against MariaDB directly and through sluice.
#
# How to run:   bash bench/mysql.sh
# Knobs (env):  DURATION=10 (seconds per run)  ROUNDS=3  THREADS="8 32"  POOL=16
#               TESTS="oltp_point_select oltp_read_only"  TABLES=4  TABLE_SIZE=100000
#               PS_MODE=auto (sysbench --db-ps-mode: auto = server-side prepared
#               statements, disable = text queries)
#
# Starts its own MariaDB (temp dir, free port) and sluice (release build, transaction
# mode, a server pool of $POOL), clients logging in with mysql_native_password over
# plaintext TCP to both. Each round runs every (test, threads) case against the two
# targets back to back, in an order that alternates per round, so machine noise hits both
# alike. Prints the median TPS per target and the ratio sluice/direct, and fails a run
# whose sysbench reports errors.
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
PASSWORD="bench-pw"

need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ]; then
            apt-get install -y -q "$2" >/dev/null
        else
            echo "bench/mysql.sh: $1 is missing; install the Debian package $2" >&2
            exit 1
        fi
    fi
}
need sysbench sysbench
need mariadbd mariadb-server
need mariadb mariadb-client

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 400); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 did not open" >&2; exit 1; }

WORK="$(mktemp -d /tmp/sluice-bench-my.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.5
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "== building sluice (release)"
(cd "$ROOT" && cargo build --release --locked -q -p proxy --bin sluice)
SLUICE="$ROOT/target/release/sluice"

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

echo "== starting sluice (pool $POOL, transaction mode)"
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
pool_mode = "transaction"
pool_size = $POOL
max_clients = 500
EOF
"$SLUICE" --config "$WORK/sluice.toml" >"$WORK/sluice.log" 2>&1 &
PIDS+=($!)
wait_port "$SLUICE_PORT"

declare -A PORT=([direct]="$MYPORT" [sluice]="$SLUICE_PORT")
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
        tps="fail"
    fi
    echo "$2 $3 $1 $tps" >>"$RESULTS"
    printf '   %-7s %-18s t=%-3s %s\n' "$1" "$2" "$3" "$tps"
}

ORDERS=("direct sluice" "sluice direct")
for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round/$ROUNDS"
    order="${ORDERS[$(((round - 1) % 2))]}"
    for test in $TESTS; do
        for threads in $THREADS; do
            for target in $order; do run_one "$target" "$test" "$threads"; done
        done
    done
done

echo
echo "== median TPS over $ROUNDS rounds of ${DURATION}s (pool $POOL, ps-mode $PS_MODE, $(nproc) cores)"
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
print(f"{'test':18} {'threads':>7} {'direct':>10} {'sluice':>10} {'s/dir':>6}")
for key in sorted({k[:2] for k in runs}):
    d, s = (median(runs[key + (t,)]) for t in ("direct", "sluice"))
    print(f"{key[0]:18} {key[1]:7d} {fmt(d)} {fmt(s)} {ratio(s, d)}")
EOF
