//! `rtt`: round-trip latency of PostgreSQL simple queries and of Redis GETs, measured by
//! one lean blocking client so that neither side carries a heavier client's own work.
//!
//! ```text
//! rtt [--rounds R] [--per-round N] [--hot H] [--protocol simple|extended]
//!     --query 'SELECT ... WHERE aid = {}'
//!     --pg NAME='host=127.0.0.1 port=5432 user=u password=p dbname=d' ...
//!     --redis NAME=127.0.0.1:6379 ...
//! ```
//!
//! Each round runs N round trips against every target in turn, the order rotating per
//! round; `{}` in the query becomes a number picked in 1..=H: written into the text with
//! the simple protocol, bound as parameter `$1` (text) with the extended protocol, as
//! `pgbench -M extended` sends it (Parse, Bind, Describe, Execute, Sync of the unnamed
//! statement and portal). A warm-up pass runs every value once first. Prints p50, p90 and
//! p99 in microseconds per target.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::{backend, frontend};

fn main() {
    if let Err(e) = run() {
        eprintln!("rtt: {e}");
        std::process::exit(1);
    }
}

struct Args {
    rounds: usize,
    per_round: usize,
    hot: u64,
    query: String,
    extended: bool,
    targets: Vec<(String, Spec)>,
}

enum Spec {
    Pg(String),
    Redis(String),
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        rounds: 5,
        per_round: 4000,
        hot: 1000,
        query: String::new(),
        extended: false,
        targets: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--rounds" => args.rounds = number(&value)? as usize,
            "--per-round" => args.per_round = number(&value)? as usize,
            "--hot" => args.hot = number(&value)?.max(1),
            "--query" => args.query = value,
            "--protocol" => {
                args.extended = match value.as_str() {
                    "simple" => false,
                    "extended" => true,
                    _ => return Err(format!("--protocol: simple or extended, not {value}")),
                }
            }
            "--pg" | "--redis" => {
                let (name, target) = value
                    .split_once('=')
                    .ok_or(format!("{flag} wants NAME=TARGET, got {value}"))?;
                let spec = if flag == "--pg" {
                    Spec::Pg(target.to_string())
                } else {
                    Spec::Redis(target.to_string())
                };
                args.targets.push((name.to_string(), spec));
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.targets.is_empty() {
        return Err("no --pg or --redis target".into());
    }
    if args.query.is_empty() && args.targets.iter().any(|(_, s)| matches!(s, Spec::Pg(_))) {
        return Err("--pg targets need --query".into());
    }
    Ok(args)
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let mut conns = Vec::new();
    for (name, spec) in &args.targets {
        let conn = match spec {
            Spec::Pg(conninfo) => {
                Conn::Pg(Pg::connect(conninfo).map_err(|e| format!("{name}: {e}"))?)
            }
            Spec::Redis(addr) => {
                Conn::Redis(Redis::connect(addr).map_err(|e| format!("{name}: {e}"))?)
            }
        };
        conns.push((
            name.clone(),
            conn,
            Vec::with_capacity(args.rounds * args.per_round),
        ));
    }
    let query = Query::new(&args.query, args.extended);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    // Warm-up: every hot value once, so that a cache holds them all before timing starts.
    for (name, conn, _) in &mut conns {
        for v in 1..=args.hot {
            conn.round_trip(&query, v)
                .map_err(|e| format!("{name}: {e}"))?;
        }
    }
    let n = conns.len();
    for round in 0..args.rounds {
        for i in 0..n {
            let (name, conn, samples) = &mut conns[(i + round) % n];
            for _ in 0..args.per_round {
                let v = rng.next() % args.hot + 1;
                let start = Instant::now();
                conn.round_trip(&query, v)
                    .map_err(|e| format!("{name}: {e}"))?;
                samples.push(start.elapsed().as_nanos() as u64);
            }
        }
    }
    println!(
        "{:10} {:>8} {:>8} {:>8} {:>8}",
        "target", "samples", "p50 us", "p90 us", "p99 us"
    );
    for (name, _, mut samples) in conns {
        samples.sort_unstable();
        let pct = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
        println!(
            "{name:10} {:8} {:8.1} {:8.1} {:8.1}",
            samples.len(),
            pct(0.5),
            pct(0.9),
            pct(0.99)
        );
    }
    Ok(())
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

enum Conn {
    Pg(Pg),
    Redis(Redis),
}

/// The point read: its text, and how it is sent.
struct Query {
    /// `{}` where the value goes (simple), or `$1` (extended).
    sql: String,
    extended: bool,
}

impl Query {
    fn new(template: &str, extended: bool) -> Query {
        let sql = if extended {
            template.replace("{}", "$1")
        } else {
            template.to_string()
        };
        Query { sql, extended }
    }
}

impl Conn {
    fn round_trip(&mut self, query: &Query, value: u64) -> io::Result<()> {
        match self {
            Conn::Pg(pg) if query.extended => pg.extended(&query.sql, &value.to_string()),
            Conn::Pg(pg) => pg.simple(&query.sql.replace("{}", &value.to_string())),
            Conn::Redis(redis) => redis.get(),
        }
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A PostgreSQL connection over plain TCP, logging in with trust or SCRAM-SHA-256.
struct Pg {
    stream: TcpStream,
    buf: BytesMut,
    out: BytesMut,
}

impl Pg {
    fn connect(conninfo: &str) -> io::Result<Pg> {
        let mut params = std::collections::HashMap::new();
        for pair in conninfo.split_whitespace() {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| invalid(format!("bad conninfo item {pair}")))?;
            params.insert(k.to_string(), v.to_string());
        }
        let get = |k: &str, default: &str| params.get(k).cloned().unwrap_or(default.to_string());
        let stream = TcpStream::connect((
            get("host", "127.0.0.1"),
            get("port", "5432").parse().unwrap_or(5432),
        ))?;
        stream.set_nodelay(true)?;
        let mut pg = Pg {
            stream,
            buf: BytesMut::with_capacity(8192),
            out: BytesMut::with_capacity(1024),
        };
        let user = get("user", "postgres");
        let dbname = get("dbname", &user);
        frontend::startup_message(
            [("user", user.as_str()), ("database", dbname.as_str())],
            &mut pg.out,
        )?;
        pg.flush()?;
        let password = get("password", "");
        let mut scram = None;
        loop {
            match pg.next()? {
                backend::Message::AuthenticationOk => {}
                backend::Message::AuthenticationSasl(_) => {
                    let s = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut pg.out)?;
                    pg.flush()?;
                    scram = Some(s);
                }
                backend::Message::AuthenticationSaslContinue(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| invalid("SASL continue before start"))?;
                    s.update(body.data())?;
                    frontend::sasl_response(s.message(), &mut pg.out)?;
                    pg.flush()?;
                }
                backend::Message::AuthenticationSaslFinal(body) => {
                    scram
                        .as_mut()
                        .ok_or_else(|| invalid("SASL final before start"))?
                        .finish(body.data())?;
                }
                backend::Message::ErrorResponse(_) => {
                    return Err(invalid("the server refused the connection"))
                }
                backend::Message::ReadyForQuery(_) => return Ok(pg),
                backend::Message::AuthenticationCleartextPassword
                | backend::Message::AuthenticationMd5Password(_) => {
                    return Err(invalid("only trust and SCRAM-SHA-256 are supported"))
                }
                _ => {}
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    fn next(&mut self) -> io::Result<backend::Message> {
        loop {
            if let Some(msg) = backend::Message::parse(&mut self.buf)? {
                return Ok(msg);
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(invalid("the server closed the connection"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// One simple query, read through to ReadyForQuery; an error response is an error.
    fn simple(&mut self, sql: &str) -> io::Result<()> {
        frontend::query(sql, &mut self.out)?;
        self.flush()?;
        self.until_ready(sql)
    }

    /// Parse, Bind (`value` as text for `$1`), Describe, Execute and Sync of the unnamed
    /// statement and portal, in one write.
    fn extended(&mut self, sql: &str, value: &str) -> io::Result<()> {
        frontend::parse("", sql, [], &mut self.out)?;
        let bound = frontend::bind(
            "",
            "",
            [0],
            [value],
            |v, buf| {
                buf.extend_from_slice(v.as_bytes());
                Ok(postgres_protocol::IsNull::No)
            },
            [0],
            &mut self.out,
        );
        bound.map_err(|_| invalid("cannot encode the Bind"))?;
        frontend::describe(b'P', "", &mut self.out)?;
        frontend::execute("", 0, &mut self.out)?;
        frontend::sync(&mut self.out);
        self.flush()?;
        self.until_ready(sql)
    }

    /// Reads through to ReadyForQuery; an error response is an error.
    fn until_ready(&mut self, sql: &str) -> io::Result<()> {
        let mut failed = false;
        loop {
            match self.next()? {
                backend::Message::ErrorResponse(_) => failed = true,
                backend::Message::ReadyForQuery(_) if failed => {
                    return Err(invalid(format!("query failed: {sql}")))
                }
                backend::Message::ReadyForQuery(_) => return Ok(()),
                _ => {}
            }
        }
    }
}

/// A Redis connection: GET of a 3-byte value, as redis-benchmark's GET test does.
struct Redis {
    stream: TcpStream,
}

const KEY: &str = "rtt:key";

impl Redis {
    fn connect(addr: &str) -> io::Result<Redis> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let mut redis = Redis { stream };
        redis.command(
            &format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{KEY}\r\n$3\r\nxxx\r\n",
                KEY.len()
            ),
            b"+OK\r\n",
        )?;
        Ok(redis)
    }

    fn get(&mut self) -> io::Result<()> {
        self.command(
            &format!("*2\r\n$3\r\nGET\r\n${}\r\n{KEY}\r\n", KEY.len()),
            b"$3\r\nxxx\r\n",
        )
    }

    fn command(&mut self, request: &str, expect: &[u8]) -> io::Result<()> {
        self.stream.write_all(request.as_bytes())?;
        let mut reply = [0u8; 64];
        let mut got = 0;
        while got < expect.len() {
            let n = self.stream.read(&mut reply[got..])?;
            if n == 0 {
                return Err(invalid("redis closed the connection"));
            }
            got += n;
        }
        if &reply[..got] != expect {
            return Err(invalid(format!(
                "unexpected reply {:?}",
                String::from_utf8_lossy(&reply[..got])
            )));
        }
        Ok(())
    }
}
