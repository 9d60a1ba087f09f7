#!/usr/bin/env bash
# bench/cache.sh — the read cache: PostgreSQL directly, through sluice without a cache,
# and through sluice with a Redis cache.
#
# How to run:   bash bench/cache.sh
# Knobs (env):  DURATION=10 (seconds per run)  ROUNDS=3  POOL=16  SCALE=10
#               CLIENTS="8 32" (client counts: the expensive workload runs at the first,
#               point reads at each)
#               HOT=1000 (point reads pick an account among the first HOT)
#               MODE=simple (pgbench -M: simple | extended | prepared)
#               WORKLOADS="expensive point"
#               WORKERS=1 (sluice's [server] workers: 1 = one thread, 0 = one per core)
#               PIN=1 (load generators on CPU 0, servers on the other CPUs; 0: anywhere)
#
# Starts its own PostgreSQL and Redis (temp dirs, free ports) and two release builds of
# sluice (transaction mode, server pool $POOL): one without a cache, one caching route
# `bench` in that Redis. pgbench -i at scale $SCALE makes pgbench_accounts (100,000 rows
# per scale unit). Two workloads, each run against the three targets back to back in an
# order that rotates per round:
#   expensive  an aggregate over the whole of pgbench_accounts
#   point      SELECT abalance ... WHERE aid = random(1, $HOT)
# Prints the median TPS per target, the ratios to direct, and p50/p99 latency from
# pgbench's per-transaction logs (a 10% sample). Every round also measures round trips
# one at a time with bench/rtt, one lean blocking client for all of them: the point read
# directly, through sluice, through sluice from the cache, a Redis GET, and the GET
# through a byte forwarder (socat); a cache hit's p50 is compared with both GETs'.
# redis-benchmark's GET (one client) is printed beside.
# sluice runs with `workers = $WORKERS`: on a 2-core machine that it shares with pgbench,
# PostgreSQL and Redis, one thread costs the least per statement.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
CLIENTS="${CLIENTS:-8 32}"
FIRST_CLIENTS="${CLIENTS%% *}"
POOL="${POOL:-16}"
SCALE="${SCALE:-10}"
HOT="${HOT:-1000}"
MODE="${MODE:-simple}"
WORKLOADS="${WORKLOADS:-expensive point}"
WORKERS="${WORKERS:-1}"
PASSWORD="bench-pw"
RTT_PER_ROUND="${RTT_PER_ROUND:-1000}"
# bench/rtt sends the point read as a simple query, or (for -M extended and prepared)
# as Parse/Bind/Describe/Execute/Sync of the unnamed statement
RTT_PROTOCOL="$([ "$MODE" = simple ] && echo simple || echo extended)"

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
need pgbench postgresql-client
need redis-server redis-server
need redis-benchmark redis-tools
need socat socat

WORK="$(mktemp -d /tmp/sluice-cache-bench.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -n "${PGPID:-}" ] && kill -QUIT "$PGPID" 2>/dev/null || true
    sleep 0.5
    rm -rf "$WORK"
}
trap cleanup EXIT

build_sluice
build_rtt
pin_cpus

echo "== starting PostgreSQL and Redis"
start_postgres "$WORK"
REDIS_PORT="$(free_port)"
"${ON_SERVERS[@]}" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$WORK" \
    >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$REDIS_PORT"
# a byte forwarder in front of Redis: the round trip of a GET through one more process
# that does nothing else, the least any proxy's extra hop costs on this machine
FORWARD_PORT="$(free_port)"
"${ON_SERVERS[@]}" socat "TCP-LISTEN:$FORWARD_PORT,bind=127.0.0.1,reuseaddr,fork,nodelay" \
    "TCP:127.0.0.1:$REDIS_PORT,nodelay" >"$WORK/socat.log" 2>&1 &
PIDS+=($!)
wait_port "$FORWARD_PORT"
echo "== pgbench -i -s $SCALE"
PGPASSWORD="$PASSWORD" pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PGPORT" -U bench bench 2>&1 | tail -1

echo "== starting sluice without and with the cache (pool $POOL, transaction mode)"
VERIFIER="$(printf '%s\n' "$PASSWORD" | "$SLUICE" passwd | tail -1)"
PLAIN_PORT="$(free_port)"
CACHE_PORT="$(free_port)"
sluice_pg_config "$PLAIN_PORT" "$WORKERS" >"$WORK/plain.toml"
{
    sluice_pg_config "$CACHE_PORT" "$WORKERS"
    printf '[routes.bench.cache]\nenabled = true\nttl_secs = 300\n'
    printf '[cache]\nredis = "redis://127.0.0.1:%s/"\n' "$REDIS_PORT"
} >"$WORK/cache.toml"
"${ON_SERVERS[@]}" "$SLUICE" --config "$WORK/plain.toml" >"$WORK/plain.log" 2>&1 &
PIDS+=($!)
"${ON_SERVERS[@]}" "$SLUICE" --config "$WORK/cache.toml" >"$WORK/cache.log" 2>&1 &
PIDS+=($!)
wait_port "$PLAIN_PORT"
wait_port "$CACHE_PORT"

cat >"$WORK/expensive.sql" <<'EOF'
SELECT bid, count(*), sum(abalance), avg(abalance) FROM pgbench_accounts GROUP BY bid ORDER BY bid;
EOF
cat >"$WORK/point.sql" <<EOF
\set aid random(1, $HOT)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
EOF

declare -A PORT=([direct]="$PGPORT" [sluice]="$PLAIN_PORT" [cache]="$CACHE_PORT")
RESULTS="$WORK/results.txt"
: >"$RESULTS"
run_one() { # target workload [clients]
    local out tps logdir="$WORK/log-$1-$2-$RANDOM" clients="${3:-$FIRST_CLIENTS}"
    mkdir -p "$logdir"
    out="$(cd "$logdir" && PGPASSWORD="$PASSWORD" "${ON_CLIENT[@]}" pgbench -n -M "$MODE" \
        -f "$WORK/$2.sql" -c "$clients" -j 2 -T "$DURATION" -l --sampling-rate 0.1 \
        -h 127.0.0.1 -p "${PORT[$1]}" -U bench bench 2>&1)" || true
    tps="$(echo "$out" | awk '/^tps = /{print $3}')"
    if ! echo "$out" | grep -q "number of failed transactions: 0 " || [ -z "$tps" ]; then
        echo "   $1 $2: FAILED: $(echo "$out" | grep -m1 -i error || true)" >&2
        tps="fail"
    fi
    # per-transaction latencies (microseconds, third field) of this run
    local lat
    lat="$(cat "$logdir"/pgbench_log.* 2>/dev/null | awk '{print $3}' | sort -n | awk '
        {v[NR]=$1} END {if (NR) printf "%d %d", v[int(NR*0.5)+1], v[int(NR*0.99)+1]; else print "0 0"}')"
    rm -rf "$logdir"
    echo "$2-c$clients $1 $tps $lat" >>"$RESULTS"
    printf '   %-7s %-9s c=%-3s %12s tps  p50/p99 %s us\n' "$1" "$2" "$clients" "$tps" "${lat/ //}"
}

ORDERS=("direct sluice cache" "sluice cache direct" "cache direct sluice")
for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round/$ROUNDS"
    order="${ORDERS[$(((round - 1) % 3))]}"
    for workload in $WORKLOADS; do
        if [ "$workload" = point ]; then
            for c in $CLIENTS; do
                for target in $order; do run_one "$target" point "$c"; done
            done
        else
            for target in $order; do run_one "$target" "$workload"; done
        fi
    done
    # one round trip at a time: a point read on each target and a Redis GET, one client
    conninfo="host=127.0.0.1 user=bench password=$PASSWORD dbname=bench"
    "${ON_CLIENT[@]}" "$RTT" --rounds 4 --per-round "$RTT_PER_ROUND" --hot "$HOT" --protocol "$RTT_PROTOCOL" \
        --query "SELECT abalance FROM pgbench_accounts WHERE aid = {}" \
        --pg "direct=$conninfo port=$PGPORT" --pg "sluice=$conninfo port=$PLAIN_PORT" \
        --pg "cache=$conninfo port=$CACHE_PORT" --redis "redis=127.0.0.1:$REDIS_PORT" \
        --redis "forwarded=127.0.0.1:$FORWARD_PORT" \
        | tail -n +2 | tee -a "$WORK/rtt.txt" | sed 's/^/   rtt /'
    # redis-benchmark's GET, for comparison (p50, ms: fifth CSV field)
    "${ON_CLIENT[@]}" redis-benchmark -p "$REDIS_PORT" -t get -n 20000 -c 1 --csv 2>/dev/null \
        | tail -1 >>"$WORK/redis.csv"
    echo "   redis-benchmark GET: $(tail -1 "$WORK/redis.csv")"
done

echo
echo "== median over $ROUNDS rounds of ${DURATION}s (-M $MODE, $CLIENTS clients, pool $POOL, scale $SCALE, hot $HOT, workers $WORKERS, $(nproc) cores, $(placement clients))"
python3 - "$RESULTS" "$WORK/redis.csv" "$CLIENTS" "$WORK/rtt.txt" <<'EOF'
import csv, statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    workload, target, tps, p50, p99 = line.split()
    runs[(workload, target)].append((tps, int(p50), int(p99)))
def med(vals, i):
    if not vals or any(v[0] == "fail" for v in vals):
        return None
    return statistics.median(float(v[i]) for v in vals)
print(f"{'workload':14} {'target':7} {'tps':>10} {'x direct':>8} {'p50 us':>8} {'p99 us':>8}")
clients = sys.argv[3].split()
for workload in [f"expensive-c{clients[0]}"] + [f"point-c{c}" for c in clients]:
    direct = med(runs[(workload, "direct")], 0)
    for target in ("direct", "sluice", "cache"):
        vals = runs[(workload, target)]
        if not vals:
            continue
        tps = med(vals, 0)
        p50, p99 = med(vals, 1), med(vals, 2)
        ratio = f"{tps / direct:8.2f}" if tps and direct else "     n/a"
        shown = f"{tps:10.0f}" if tps else "      fail"
        print(f"{workload:14} {target:7} {shown} {ratio} {p50 or 0:8.0f} {p99 or 0:8.0f}")
# bench/rtt lines: target samples p50 p90 p99 (microseconds), one per target and round
rtt = defaultdict(list)
for line in open(sys.argv[4]):
    target, _, p50, p90, p99 = line.split()
    rtt[target].append((float(p50), float(p90), float(p99)))
print()
print(f"round trips one at a time (bench/rtt, 1 client; medians over the rounds)")
print(f"{'target':14} {'p50 us':>8} {'p90 us':>8} {'p99 us':>8}")
for target in ("direct", "sluice", "cache", "redis", "forwarded"):
    if rtt[target]:
        p50, p90, p99 = (statistics.median(v[i] for v in rtt[target]) for i in range(3))
        print(f"{target:14} {p50:8.1f} {p90:8.1f} {p99:8.1f}")
rows = list(csv.reader(open(sys.argv[2])))
# "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
try:
    bench_p50 = statistics.median(float(row[4]) * 1000 for row in rows)
    print(f"redis-benchmark GET p50 {bench_p50:.0f} us")
except (IndexError, ValueError):
    print("redis-benchmark figures unavailable:", rows)
if rtt["cache"] and rtt["redis"]:
    hit = statistics.median(v[0] for v in rtt["cache"])
    get = statistics.median(v[0] for v in rtt["redis"])
    print(f"cache hit p50 {hit:.1f} us = {hit / get:.2f}x the Redis GET p50 ({get:.1f} us)")
    if rtt["forwarded"]:
        fwd = statistics.median(v[0] for v in rtt["forwarded"])
        print(f"a GET through a byte forwarder (socat) p50 {fwd:.1f} us = {fwd / get:.2f}x the GET;"
              f" the cache hit is {hit / fwd:.2f}x that")
EOF
