#!/usr/bin/env bash
# bench/pg.sh — pgbench against PostgreSQL directly, through PgBouncer and through sluice.
#
# How to run:   bash bench/pg.sh
# Knobs (env):  DURATION=10 (seconds per run)  ROUNDS=3  CLIENTS="8 32"  POOL=16
#               MODES="simple extended prepared"  SCRIPTS="select tpcb"  SCALE=10
#               POLICY=1 (a fourth target: sluice with a 200-rule access policy)
#               AUDIT=1 (with POLICY=1: that sluice also writes the audit log to a file)
#               PIN=1 (pgbench on CPU 0, the servers on the other CPUs; 0: anywhere)
#
# Starts its own PostgreSQL (temp dir, free port), PgBouncer (Debian package, transaction
# mode) and sluice (release build, transaction mode), both with a server pool of $POOL,
# clients logging in with SCRAM-SHA-256 over plaintext TCP to all three. Each round runs
# every (script, mode, clients) case against the three targets back to back, in an order
# that rotates per round, so machine noise hits all of them alike. Prints the median TPS
# per target and the ratios sluice/PgBouncer and sluice/direct.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
CLIENTS="${CLIENTS:-8 32}"
POOL="${POOL:-16}"
MODES="${MODES:-simple extended prepared}"
SCRIPTS="${SCRIPTS:-select tpcb}"
SCALE="${SCALE:-10}"
POLICY="${POLICY:-0}"
AUDIT="${AUDIT:-0}"
PASSWORD="bench-pw"

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
need pgbench postgresql-client
need pgbouncer pgbouncer
PGBOUNCER="$(command -v pgbouncer || echo /usr/sbin/pgbouncer)"

WORK="$(mktemp -d /tmp/sluice-bench.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -n "${PGPID:-}" ] && kill -QUIT "$PGPID" 2>/dev/null || true
    sleep 0.5
    rm -rf "$WORK"
}
trap cleanup EXIT

build_sluice
pin_cpus

echo "== starting PostgreSQL"
start_postgres "$WORK"
echo "== pgbench -i -s $SCALE"
PGPASSWORD="$PASSWORD" pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PGPORT" -U bench bench 2>&1 | tail -1

echo "== starting PgBouncer $("$PGBOUNCER" --version | head -1 | awk '{print $2}') and sluice (pool $POOL, transaction mode)"
BOUNCER_PORT="$(free_port)"
VERIFIER="$(printf '%s\n' "$PASSWORD" | "$SLUICE" passwd | tail -1)"
echo "\"bench\" \"$VERIFIER\"" >"$WORK/userlist.txt"
cat >"$WORK/pgbouncer.ini" <<EOF
[databases]
bench = host=127.0.0.1 port=$PGPORT dbname=bench user=bench password=$PASSWORD
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $POOL
max_client_conn = 500
logfile = $WORK/pgbouncer.log
pidfile = $WORK/pgbouncer.pid
EOF
[ "$(id -u)" = 0 ] && chown -R postgres: "$WORK"
as_pg "${ON_SERVERS[@]}" "$PGBOUNCER" "$WORK/pgbouncer.ini" >/dev/null 2>&1 &
PIDS+=($!)
SLUICE_PORT="$(free_port)"
sluice_pg_config "$SLUICE_PORT" >"$WORK/sluice.toml"
"${ON_SERVERS[@]}" "$SLUICE" --config "$WORK/sluice.toml" >"$WORK/sluice.log" 2>&1 &
PIDS+=($!)
TARGETS="direct pgbouncer sluice"
declare -A PORT=([direct]="$PGPORT" [pgbouncer]="$BOUNCER_PORT" [sluice]="$SLUICE_PORT")
if [ "$POLICY" = 1 ]; then
    # The same sluice config plus 200 rules: 195 for other roles over their own schemas,
    # and the five the bench user needs (as a role).
    {
        for i in $(seq 0 194); do
            actions=(select insert update delete)
            echo "p, role$i, *, schema$i.*, ${actions[$((i % 4))]}, allow"
        done
        for a in select insert update delete; do echo "p, bench_rw, bench, public.pgbench_*, $a, allow"; done
        echo "p, bench_rw, bench, *, transaction, allow"
        echo "g, bench, bench_rw, *"
    } >"$WORK/policy.csv"
    POLICY_PORT="$(free_port)"
    sed "s/127.0.0.1:$SLUICE_PORT/127.0.0.1:$POLICY_PORT/" "$WORK/sluice.toml" >"$WORK/policy.toml"
    printf '[policy]\nfiles = ["%s"]\n' "$WORK/policy.csv" >>"$WORK/policy.toml"
    if [ "$AUDIT" = 1 ]; then
        printf '[audit]\nenabled = true\nsink = "%s"\n' "$WORK/audit.jsonl" >>"$WORK/policy.toml"
    fi
    "${ON_SERVERS[@]}" "$SLUICE" --config "$WORK/policy.toml" >"$WORK/sluice-policy.log" 2>&1 &
    PIDS+=($!)
    wait_port "$POLICY_PORT"
    "$SLUICE" policy check --config "$WORK/policy.toml" --user bench --route bench \
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1" | tail -1
    PORT[policy]="$POLICY_PORT"
    TARGETS="$TARGETS policy"
fi
wait_port "$BOUNCER_PORT"
wait_port "$SLUICE_PORT"

RESULTS="$WORK/results.txt"
: >"$RESULTS"
run_one() { # target script mode clients
    local flags=() out tps
    [ "$2" = select ] && flags+=(-S)
    out="$(PGPASSWORD="$PASSWORD" "${ON_CLIENT[@]}" pgbench -n "${flags[@]}" -M "$3" -c "$4" -j 2 -T "$DURATION" \
        -h 127.0.0.1 -p "${PORT[$1]}" -U bench bench 2>&1)" || true
    tps="$(echo "$out" | awk '/^tps = /{print $3}')"
    if ! echo "$out" | grep -q "number of failed transactions: 0 " || [ -z "$tps" ]; then
        echo "   $1 $2 $3 c=$4: FAILED: $(echo "$out" | grep -m1 -i error || true)" >&2
        tps="fail"
    fi
    echo "$2 $3 $4 $1 $tps" >>"$RESULTS"
    printf '   %-9s %-6s %-8s c=%-3s %s\n' "$1" "$2" "$3" "$4" "$tps"
}

read -r -a TARGET_LIST <<<"$TARGETS"
for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round/$ROUNDS"
    # rotate the order each round
    shift_by=$(((round - 1) % ${#TARGET_LIST[@]}))
    order="${TARGET_LIST[*]:$shift_by} ${TARGET_LIST[*]:0:$shift_by}"
    for script in $SCRIPTS; do
        for mode in $MODES; do
            for clients in $CLIENTS; do
                for target in $order; do run_one "$target" "$script" "$mode" "$clients"; done
            done
        done
    done
done

echo
echo "== median TPS over $ROUNDS rounds of ${DURATION}s (pool $POOL, scale $SCALE, $(nproc) cores, $(placement pgbench))"
python3 - "$RESULTS" <<'EOF'
import statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    script, mode, clients, target, tps = line.split()
    runs[(script, mode, int(clients), target)].append(tps)
def median(vals):
    ok = [float(v) for v in vals if v != "fail"]
    return statistics.median(ok) if len(ok) == len(vals) and ok else None
fmt = lambda v: f"{v:10.0f}" if v is not None else "      fail"
ratio = lambda a, b: f"{a / b:6.2f}" if a is not None and b else "   n/a"
policy = any(k[3] == "policy" for k in runs)
head = f"{'script':7} {'mode':9} {'clients':>7} {'direct':>10} {'pgbouncer':>10} {'sluice':>10} {'s/pgb':>6} {'s/dir':>6}"
print(head + (f" {'policy':>10} {'pol/s':>6}" if policy else ""))
for key in sorted({k[:3] for k in runs}):
    d, b, s = (median(runs[key + (t,)]) for t in ("direct", "pgbouncer", "sluice"))
    line = f"{key[0]:7} {key[1]:9} {key[2]:7d} {fmt(d)} {fmt(b)} {fmt(s)} {ratio(s, b)} {ratio(s, d)}"
    if policy:
        p = median(runs[key + ("policy",)])
        line += f" {fmt(p)} {ratio(p, s)}"
    print(line)
EOF
