//! Semantic checks that serde cannot express; each error names the key it is about.

use super::{Backend, BackendKind, BackendTls, Config, TlsMode};
use crate::auth::Verifier;

/// A problem: the dotted key it concerns and what is wrong.
pub type Problem = (String, String);

/// Checks a parsed config. Returns the first problem found.
pub fn validate(config: &Config) -> Result<(), Problem> {
    check_server(config)?;
    check_tls(config)?;
    for (name, user) in &config.users {
        Verifier::parse(&user.password, user.auth)
            .map_err(|e| (format!("users.{name}.password"), e.to_string()))?;
        if let Some(native) = &user.mysql_native_password {
            if crate::auth::mysql::parse_native(native).is_none() {
                return Err((
                    format!("users.{name}.mysql_native_password"),
                    "expected `*` and 40 hex digits from `sluice passwd --mysql`, not a \
                     plaintext password"
                        .into(),
                ));
            }
        }
    }
    for (name, user) in &config.users {
        for (i, net) in user.networks.iter().enumerate() {
            if crate::access::Cidr::parse(net).is_none() {
                return Err((
                    format!("users.{name}.networks[{i}]"),
                    format!("{net:?} is not an address or a network like 10.0.0.0/8"),
                ));
            }
        }
    }
    if config.audit.buffer == 0 {
        return Err(("audit.buffer".into(), "must be at least 1".into()));
    }
    for (name, backend) in &config.backends {
        check_backend(name, backend)?;
    }
    for (name, route) in &config.routes {
        if !config.backends.contains_key(&route.backend) {
            return Err((
                format!("routes.{name}.backend"),
                format!("no backend named {:?} in [backends]", route.backend),
            ));
        }
        let positive = |v: f64| v.is_finite() && v >= 0.0;
        for (key, v) in [
            ("checkout_timeout_secs", route.checkout_timeout_secs),
            ("idle_timeout_secs", route.idle_timeout_secs),
            ("max_lifetime_secs", route.max_lifetime_secs),
        ] {
            if !positive(v) || (key == "checkout_timeout_secs" && v == 0.0) {
                return Err((
                    format!("routes.{name}.{key}"),
                    "must be a positive number of seconds".into(),
                ));
            }
        }
        if route.min_idle > route.pool_size {
            return Err((
                format!("routes.{name}.min_idle"),
                "must not exceed pool_size".into(),
            ));
        }
        if route.pool_size == 0 {
            return Err((
                format!("routes.{name}.pool_size"),
                "must be at least 1".into(),
            ));
        }
        check_route_cache(name, &route.cache)?;
    }
    check_cache(config)
}

fn check_route_cache(name: &str, c: &crate::config::RouteCache) -> Result<(), Problem> {
    let ttl_ok = |v: f64| v.is_finite() && v > 0.0;
    if !ttl_ok(c.ttl_secs) {
        return Err((
            format!("routes.{name}.cache.ttl_secs"),
            "must be a positive number of seconds".into(),
        ));
    }
    if let Some((table, _)) = c.tables.iter().find(|(_, v)| !ttl_ok(**v)) {
        return Err((
            format!("routes.{name}.cache.tables.{table}"),
            "must be a positive number of seconds".into(),
        ));
    }
    Ok(())
}

fn check_cache(config: &Config) -> Result<(), Problem> {
    let c = &config.cache;
    if c.redis.is_some() && !c.redis_cluster.is_empty() {
        return Err((
            "cache.redis_cluster".into(),
            "set either cache.redis or cache.redis_cluster, not both".into(),
        ));
    }
    for url in c.redis.iter().chain(&c.redis_cluster) {
        if let Err(e) = redis::Client::open(url.as_str()) {
            return Err(("cache.redis".into(), format!("invalid Redis URL: {e}")));
        }
    }
    if c.timeout_ms == 0 {
        return Err(("cache.timeout_ms".into(), "must be at least 1".into()));
    }
    if !(c.breaker_open_secs.is_finite() && c.breaker_open_secs > 0.0) {
        return Err((
            "cache.breaker_open_secs".into(),
            "must be a positive number of seconds".into(),
        ));
    }
    if c.memory_entries == 0 || c.max_entry_bytes == 0 {
        return Err((
            "cache.memory_entries".into(),
            "memory_entries and max_entry_bytes must be at least 1".into(),
        ));
    }
    Ok(())
}

fn check_backend(name: &str, backend: &Backend) -> Result<(), Problem> {
    let key = |k: &str| format!("backends.{name}.{k}");
    match backend.kind {
        BackendKind::Sqlite => {
            if backend.path.is_none() {
                return Err((
                    key("path"),
                    "a sqlite backend needs a database file path".into(),
                ));
            }
            if let Some(seed) = &backend.seed {
                if !seed.is_file() {
                    return Err((
                        key("seed"),
                        format!("seed file {} does not exist", seed.display()),
                    ));
                }
            }
        }
        BackendKind::Postgres | BackendKind::Mysql => {
            let kind = if backend.kind == BackendKind::Mysql {
                "mysql"
            } else {
                "postgres"
            };
            if backend.host.is_none() {
                return Err((key("host"), format!("a {kind} backend needs a host")));
            }
            if backend.user.is_none() {
                return Err((key("user"), format!("a {kind} backend needs a user")));
            }
            if backend.password.is_some() && backend.password_env.is_some() {
                return Err((
                    key("password_env"),
                    "set password or password_env, not both".into(),
                ));
            }
            if let Some(var) = &backend.password_env {
                if std::env::var_os(var).is_none() {
                    return Err((
                        key("password_env"),
                        format!("environment variable {var} is not set"),
                    ));
                }
            }
            if !(backend.connect_timeout_secs.is_finite() && backend.connect_timeout_secs > 0.0) {
                return Err((
                    key("connect_timeout_secs"),
                    "must be a positive number".into(),
                ));
            }
            if backend.tls == BackendTls::VerifyFull {
                match &backend.tls_ca {
                    None => return Err((key("tls_ca"), "required for tls = verify-full".into())),
                    Some(p) if !p.is_file() => {
                        return Err((
                            key("tls_ca"),
                            format!("file {} does not exist", p.display()),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
    }
    Ok(())
}

fn check_server(config: &Config) -> Result<(), Problem> {
    let s = &config.server;
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !positive(s.login_timeout_secs) {
        return Err((
            "server.login_timeout_secs".into(),
            "must be a positive number".into(),
        ));
    }
    if !positive(s.shutdown_timeout_secs) && s.shutdown_timeout_secs != 0.0 {
        return Err((
            "server.shutdown_timeout_secs".into(),
            "must be zero or positive".into(),
        ));
    }
    if !positive(s.watch_secs) && s.watch_secs != 0.0 {
        return Err((
            "server.watch_secs".into(),
            "must be zero (off) or positive".into(),
        ));
    }
    if s.workers > 1024 {
        return Err(("server.workers".into(), "must be at most 1024".into()));
    }
    if s.max_message_bytes < 1024 {
        return Err((
            "server.max_message_bytes".into(),
            "must be at least 1024".into(),
        ));
    }
    if config.listeners.postgres.is_none() && config.listeners.mysql.is_none() {
        return Err(("listeners".into(), "no listener configured".into()));
    }
    Ok(())
}

fn check_tls(config: &Config) -> Result<(), Problem> {
    let tls = &config.tls;
    if tls.mode == TlsMode::Disable {
        return Ok(());
    }
    for (key, path) in [("tls.cert", &tls.cert), ("tls.key", &tls.key)] {
        match path {
            None => {
                return Err((
                    key.into(),
                    "required when tls.mode is allow or require".into(),
                ))
            }
            Some(p) if !p.is_file() => {
                return Err((key.into(), format!("file {} does not exist", p.display())))
            }
            Some(_) => {}
        }
    }
    crate::tls::server_config(tls).map_err(|e| ("tls".to_string(), e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};

    const VERIFIER: &str = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$\
        WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:\
        Na+3Ar7hKjWFbP5VJG3aRUHR5QCSzd9w8HHdH6ZM6Mw=";

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"), Path::new("/nonexistent"))
    }

    fn base() -> String {
        format!(
            "[listeners]\npostgres = \"127.0.0.1:0\"\n\
             [users.app]\npassword = \"{VERIFIER}\"\n\
             [backends.lite]\nkind = \"sqlite\"\npath = \"/tmp/x.db\"\n\
             [routes.app]\nbackend = \"lite\"\n"
        )
    }

    #[test]
    fn a_minimal_config_is_valid() {
        let c = load(&base()).unwrap();
        assert_eq!(c.routes["app"].pool_size, 10);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let text = base() + "unknown_knob = 3\n";
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("unknown_knob"), "{err}");
        assert!(err.contains("line 10"), "{err}");
    }

    #[test]
    fn cache_settings_are_checked() {
        let ok = base() + "[routes.app.cache]\nenabled = true\ntables = { \"main.t\" = 5 }\n";
        assert!(load(&ok).unwrap().routes["app"].cache.enabled);
        for (extra, key) in [
            (
                "[routes.app.cache]\nttl_secs = 0\n",
                "routes.app.cache.ttl_secs",
            ),
            (
                "[routes.app.cache]\ntables = { \"main.t\" = -1 }\n",
                "routes.app.cache.tables.main.t",
            ),
            ("[routes.app.cache]\ninvalidate = \"row\"\n", "invalidate"),
            ("[cache]\ntimeout_ms = 0\n", "cache.timeout_ms"),
            ("[cache]\nredis = \"nonsense\"\n", "cache.redis"),
            (
                "[cache]\nredis = \"redis://a/\"\nredis_cluster = [\"redis://b/\"]\n",
                "cache.redis_cluster",
            ),
        ] {
            let err = load(&(base() + extra)).unwrap_err().to_string();
            assert!(err.contains(key), "{extra}: {err}");
        }
    }

    #[test]
    fn workers_are_checked() {
        let one = format!("[server]\nworkers = 1\n{}", base());
        assert_eq!(load(&one).unwrap().server.workers, 1);
        assert_eq!(load(&base()).unwrap().server.workers, 0);
        let many = format!("[server]\nworkers = 5000\n{}", base());
        let err = load(&many).unwrap_err().to_string();
        assert!(err.contains("server.workers"), "{err}");
    }

    #[test]
    fn a_route_to_a_missing_backend_is_rejected() {
        let text = base().replace("backend = \"lite\"", "backend = \"nope\"");
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("routes.app.backend"), "{err}");
    }

    #[test]
    fn a_plaintext_password_is_rejected() {
        let text = base().replace(VERIFIER, "hunter2");
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("users.app.password"), "{err}");
    }

    #[test]
    fn tls_without_a_cert_file_is_rejected() {
        let text = base() + "[tls]\nmode = \"require\"\ncert = \"missing.crt\"\nkey = \"k.pem\"\n";
        let err = load(&text).unwrap_err().to_string();
        assert!(
            err.contains("tls.cert") && err.contains("missing.crt"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_value_type_is_named_with_its_line() {
        let text = base().replace("pool_size = 10", "") + "pool_size = \"many\"\n";
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("line 10"), "{err}");
    }
}
