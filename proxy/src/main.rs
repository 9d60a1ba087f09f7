//! The `sluice` command: parse arguments, set up logging, load the config, run.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use proxy::config::Config;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// mimalloc: sessions allocate and free many small buffers per statement, which it serves
/// with less work than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "sluice", version, about = "sluice: a database access proxy")]
struct Cli {
    /// Config file to run with.
    #[arg(long, short, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Log lines as JSON instead of text.
    #[arg(long)]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file; exit non-zero naming the problem.
    CheckConfig { file: PathBuf },
    /// Print a stored verifier for a password read from standard input.
    Passwd {
        /// Print an md5 verifier for this user name instead of SCRAM-SHA-256.
        #[arg(long, value_name = "USER")]
        md5: Option<String>,
        /// Print a `mysql_native_password` verifier (for `users.NAME.mysql_native_password`).
        #[arg(long, conflicts_with = "md5")]
        mysql: bool,
        /// PBKDF2 iterations for SCRAM-SHA-256.
        #[arg(long, default_value_t = proxy::auth::DEFAULT_ITERATIONS)]
        iterations: u32,
    },
    /// Access policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print how a statement is classified and whether the user may run it on the route.
    /// Exits 0 when permitted, 1 when denied, 2 on a bad config or policy.
    Check {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        user: String,
        #[arg(long)]
        route: String,
        /// The SQL, as a client would send it (several statements allowed).
        sql: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::Passwd {
            md5,
            mysql,
            iterations,
        }) => passwd(md5.as_deref(), mysql, iterations),
        Some(Command::Policy {
            command:
                PolicyCommand::Check {
                    config,
                    user,
                    route,
                    sql,
                },
        }) => policy_check(&config, &user, &route, &sql),
        None => match cli.config {
            Some(path) => run(&path, cli.log_json),
            None => {
                eprintln!(
                    "sluice: no config file; pass --config FILE (see examples/reference.toml)"
                );
                ExitCode::from(2)
            }
        },
    }
}

fn policy_check(file: &std::path::Path, user: &str, route: &str, sql: &str) -> ExitCode {
    let config = match Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    match proxy::access::explain(&config, user, route, sql) {
        Ok((text, permitted)) => {
            print!("{text}");
            if permitted {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::from(2)
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file).and_then(|c| {
        proxy::tls::server_config(&c.tls).map_err(|e| proxy::config::ConfigError::Invalid {
            path: file.to_path_buf(),
            key: "tls".into(),
            message: e.to_string(),
        })
    }) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::FAILURE
        }
    }
}

fn passwd(md5_user: Option<&str>, mysql: bool, iterations: u32) -> ExitCode {
    if iterations == 0 {
        eprintln!("sluice: --iterations must be at least 1");
        return ExitCode::from(2);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password: ");
    }
    let mut line = String::new();
    if stdin.lock().read_line(&mut line).is_err() || line.trim_end_matches(['\r', '\n']).is_empty()
    {
        eprintln!("sluice: no password on standard input");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\r', '\n']);
    match md5_user {
        Some(user) => println!("{}", proxy::auth::md5_verifier(password, user)),
        None if mysql => println!("{}", proxy::auth::mysql::native_verifier(password)),
        None => println!("{}", proxy::auth::scram_verifier(password, iterations)),
    }
    ExitCode::SUCCESS
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The runtime sessions run on: `workers` threads (0: one per CPU sluice may run on; 1,
/// or 0 with a single CPU: the current thread alone).
fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    // the CPUs sluice may run on (its affinity mask, a container's CPU limit)
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = if workers == 0 { cpus } else { workers };
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = builder.enable_all().build()?;
    tracing::info!(threads, "sessions run on {threads} thread(s)");
    Ok(runtime)
}

fn run(path: &std::path::Path, json: bool) -> ExitCode {
    init_logging(json);
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match runtime(config.server.workers) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
            signals.cancel();
        });
        proxy::app::run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}
