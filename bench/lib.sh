# bench/lib.sh — helpers the benchmark scripts share (sourced, not run).

# need CMD PKG: installs the Debian package PKG when CMD is missing (as root), or stops.
need() {
    if ! command -v "$1" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$1" ]; then
        if [ "$(id -u)" = 0 ]; then
            apt-get install -y -q "$2" >/dev/null
        else
            echo "$(basename "$0"): $1 is missing; install the Debian package $2" >&2
            exit 1
        fi
    fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() { for _ in $(seq 1 400); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 did not open" >&2; exit 1; }

# Runs a command as the postgres user when root (PostgreSQL refuses to run as root). In a
# background job (a subshell) it execs, so that $! is the program's own PID and the
# scripts' cleanup stops the program, not just the subshell.
as_pg() {
    local run=()
    [ "$(id -u)" = 0 ] && run=(setpriv --reuid=postgres --regid=postgres --init-groups)
    if [ "$BASHPID" != "$$" ]; then exec "${run[@]}" "$@"; fi
    "${run[@]}" "$@"
}

# CPU placement. With PIN=1 (the default on a machine with 2 or more CPUs, for the scripts
# that call pin_cpus) load generators run on CPU 0 and servers on the other CPUs, as when
# clients run on other hosts: the servers under test never compete with the load
# generator for a core, and every client round trip crosses cores. PIN=0 leaves
# placement to the scheduler. Prefix commands with "${ON_CLIENT[@]}" or "${ON_SERVERS[@]}".
ON_CLIENT=()
ON_SERVERS=()
pin_cpus() {
    local n
    n="$(nproc)"
    if [ "${PIN:-1}" = 1 ] && [ "$n" -ge 2 ]; then
        ON_CLIENT=(taskset -c 0)
        ON_SERVERS=(taskset -c "1-$((n - 1))")
    fi
}

# placement WHO: the placement pin_cpus chose, for a summary line ("WHO on CPU 0, servers
# on CPUs 1-N" or "unpinned").
placement() {
    if [ ${#ON_CLIENT[@]} -gt 0 ]; then
        echo "$1 on CPU 0, servers on CPUs 1-$(($(nproc) - 1))"
    else
        echo "unpinned"
    fi
}

# Builds the release sluice and sets SLUICE to it.
build_sluice() {
    echo "== building sluice (release)"
    (cd "$ROOT" && cargo build --release --locked -q -p proxy --bin sluice)
    SLUICE="$ROOT/target/release/sluice"
}

# Builds the round-trip latency client (bench/rtt) and sets RTT to it.
build_rtt() {
    (cd "$ROOT" && cargo build --release --locked -q -p rtt)
    RTT="$ROOT/target/release/rtt"
}

# start_postgres DIR: initdb and start a PostgreSQL in DIR on a free port (PGPORT, PGPID),
# with a role and database `bench` (password $PASSWORD); on the servers' CPUs.
start_postgres() {
    local pgbin
    pgbin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
    PGPORT="$(free_port)"
    [ "$(id -u)" = 0 ] && chown postgres: "$1"
    as_pg "$pgbin/initdb" -D "$1/pg" -U postgres --auth=trust -E UTF8 --no-sync --locale=C >/dev/null
    as_pg "${ON_SERVERS[@]}" "$pgbin/postgres" -D "$1/pg" -p "$PGPORT" -k "$1" -c listen_addresses=127.0.0.1 \
        -c max_connections=300 -c shared_buffers=256MB -c synchronous_commit=off \
        >"$1/pg.log" 2>&1 &
    PGPID=$!
    wait_port "$PGPORT"
    sleep 0.5
    psql -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres \
        -c "CREATE ROLE bench LOGIN PASSWORD '$PASSWORD'" \
        -c "CREATE DATABASE bench OWNER bench" >/dev/null
}

# sluice_pg_config PORT [WORKERS]: a sluice config listening on PORT with user `bench`
# (VERIFIER) and route `bench` to the PostgreSQL at PGPORT in transaction mode (server
# pool POOL); with WORKERS, the [server] workers setting.
sluice_pg_config() {
    if [ -n "${2:-}" ]; then printf '[server]\nworkers = %s\n' "$2"; fi
    cat <<EOF
[listeners]
postgres = "127.0.0.1:$1"
[users.bench]
password = "$VERIFIER"
[backends.pg]
kind = "postgres"
host = "127.0.0.1"
port = $PGPORT
user = "bench"
password = "$PASSWORD"
[routes.bench]
backend = "pg"
pool_mode = "transaction"
pool_size = $POOL
max_clients = 500
EOF
}
