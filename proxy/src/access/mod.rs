//! Access control: connection rules checked at login and the policy check of every
//! statement. The part that reload replaces ([`AccessState`]: users, their rules, the
//! policy) is built off to the side and swapped whole; a session keeps its own classification
//! state ([`SessionPolicy`]: search path, SQL-level prepared statements).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use policies::Policy;

use crate::audit::AuditSink;
use crate::classify::{self, Access, Classified, ClassifyCache, Dialect, Scope};
use crate::config::{Config, Unparsed};
use crate::state::UserEntry;

mod session;

pub use session::{startup_search_path, SessionPolicy};

/// An IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `::1/128`, or a bare address.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let bits = |a: IpAddr| -> u128 {
            match a {
                IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
                IpAddr::V6(v) => u128::from(v),
            }
        };
        if self.addr.is_ipv4() != ip.is_ipv4() {
            return false;
        }
        let shift = if self.addr.is_ipv4() { 32 } else { 128 } - u32::from(self.prefix);
        let mask = if self.prefix == 0 {
            0
        } else {
            u128::MAX << (shift + if self.addr.is_ipv4() { 96 } else { 0 })
        };
        bits(self.addr) & mask == bits(ip) & mask
    }
}

/// Where and how a user may connect.
#[derive(Debug, Clone, Default)]
pub struct ConnectionRules {
    pub networks: Vec<Cidr>,
    pub require_tls: bool,
    pub routes: Vec<String>,
}

impl ConnectionRules {
    pub fn from_config(user: &crate::config::User) -> ConnectionRules {
        ConnectionRules {
            networks: user
                .networks
                .iter()
                .filter_map(|n| Cidr::parse(n))
                .collect(),
            require_tls: user.require_tls,
            routes: user.routes.clone(),
        }
    }

    /// Whether the user may use `route`.
    pub fn allows_route(&self, route: &str) -> bool {
        self.routes.is_empty() || self.routes.iter().any(|p| policies::glob(p, route))
    }

    /// Why a connection from `peer` (over TLS or not) to `route` is refused, if it is.
    pub fn refuse(
        &self,
        peer: Option<SocketAddr>,
        tls: bool,
        route: Option<&str>,
    ) -> Option<String> {
        if self.require_tls && !tls {
            return Some("this user must connect with TLS".into());
        }
        if !self.networks.is_empty() {
            let inside = peer.is_some_and(|p| self.networks.iter().any(|n| n.contains(p.ip())));
            if !inside {
                return Some("this user may not connect from this address".into());
            }
        }
        if let Some(route) = route.filter(|r| !self.allows_route(r)) {
            return Some(format!("this user may not use database \"{route}\""));
        }
        None
    }
}

/// Checks a logged-in user's connection rules for `route` and records the login in the
/// audit log. Returns why the connection is refused.
pub fn admit(
    state: &crate::state::State,
    protocol: &str,
    user: &str,
    peer: Option<SocketAddr>,
    tls: bool,
    route: Option<&str>,
) -> Result<(), String> {
    let access = state.access();
    let refused = match access.users.get(user) {
        Some(u) => u.rules.refuse(peer, tls, route),
        None => Some("unknown user".into()),
    };
    if let Some(sink) = &access.audit {
        sink.record(crate::audit::login_event(
            protocol,
            user,
            peer,
            route.unwrap_or(""),
            refused.as_deref().map_or(Ok(()), Err),
        ));
    }
    if refused.is_some() {
        metrics::counter!(crate::metrics::AUTH_FAILURES, "protocol" => protocol.to_string(), "reason" => "rules")
            .increment(1);
    }
    refused.map_or(Ok(()), Err)
}

/// Records a failed authentication (wrong password, unknown user) in the audit log.
pub fn audit_failed_login(
    state: &crate::state::State,
    protocol: &str,
    user: &str,
    peer: Option<SocketAddr>,
    route: &str,
    reason: &str,
) {
    if let Some(sink) = &state.access().audit {
        sink.record(crate::audit::login_event(
            protocol,
            user,
            peer,
            route,
            Err(reason),
        ));
    }
}

/// The reloadable part of the running state.
pub struct AccessState {
    pub users: HashMap<String, UserEntry>,
    /// None: no `[policy]` configured; statements are not checked.
    pub policy: Option<Policy>,
    /// Routes whose unclassifiable statements skip the check (`unparsed = "allow"`).
    pub unparsed_allowed: HashSet<String>,
    /// The audit log (None: off).
    pub audit: Option<Arc<AuditSink>>,
    /// Bumped by every reload: prepared statements checked under an older one are
    /// checked again before they run.
    pub generation: u64,
    /// Classifications (independent of policies: kept across reloads).
    pub classified: Arc<ClassifyCache>,
}

impl AccessState {
    /// Builds the policy part from a config (users are added by the caller).
    pub fn policy_from(config: &Config) -> Result<Option<Policy>, policies::PolicyError> {
        config
            .policy
            .as_ref()
            .map(|p| Policy::load(p.model.as_deref(), &p.files))
            .transpose()
    }

    /// Whether `user` may switch to `route` (MySQL `USE`, COM_INIT_DB).
    pub fn may_use(&self, user: &str, route: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.rules.allows_route(route))
    }

    pub fn unparsed_from(config: &Config) -> HashSet<String> {
        config
            .routes
            .iter()
            .filter(|(_, r)| r.unparsed == Unparsed::Allow)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// A statement refused by policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The action and object refused (None: the statement could not be classified).
    pub access: Option<Access>,
    pub reason: String,
}

impl Denial {
    /// The message for the client: the action, the object and the reason.
    pub fn message(&self) -> String {
        match &self.access {
            Some(a) => format!(
                "permission denied: {} on {} ({})",
                a.action, a.object, self.reason
            ),
            None => self.reason.clone(),
        }
    }
}

/// A permitted request: what it was classified as (for audit and later re-checks).
#[derive(Debug, Clone)]
pub struct Permit {
    pub generation: u64,
    /// The request's text (for the audit event of a later refusal).
    pub text: Arc<str>,
    pub statements: Arc<[Classified]>,
    /// The request could not be classified (allowed by `unparsed = "allow"` or with no
    /// policy): what it reads and writes is unknown.
    pub unclassified: bool,
}

/// What `sluice policy check` prints: the classification of each statement and the
/// decision for `user` on `route` under the config's policy. Returns the text and whether
/// the request is permitted.
pub fn explain(
    config: &Config,
    user: &str,
    route: &str,
    sql: &str,
) -> Result<(String, bool), String> {
    use std::fmt::Write;
    let r = config
        .routes
        .get(route)
        .ok_or_else(|| format!("no route named {route:?} in the config"))?;
    let kind = config.backends.get(&r.backend).map(|b| b.kind);
    let dialect = match kind {
        Some(crate::config::BackendKind::Postgres) => Dialect::Postgres,
        Some(crate::config::BackendKind::Mysql) => Dialect::Mysql,
        _ => Dialect::Sqlite,
    };
    let database = r.database.clone().unwrap_or_else(|| route.to_string());
    let policy = AccessState::policy_from(config).map_err(|e| e.to_string())?;
    let access = AccessState {
        users: HashMap::new(),
        unparsed_allowed: AccessState::unparsed_from(config),
        policy,
        audit: None,
        generation: 0,
        classified: Arc::default(),
    };
    let mut out = String::new();
    let _ = writeln!(out, "route: {route} ({dialect:?}, database {database})");
    if let Some(u) = config.users.get(user) {
        if let Some(reason) = ConnectionRules::from_config(u).refuse(None, true, Some(route)) {
            let _ = writeln!(out, "login: refused: {reason}");
        }
    } else {
        let _ = writeln!(out, "login: no user named {user:?} in the config");
    }
    match classify::classify(
        sql,
        &Scope {
            dialect,
            search_path: &[],
            database: &database,
            lexing: Default::default(),
            fold_table_names: true,
        },
    ) {
        Ok(stmts) => {
            for (i, s) in stmts.iter().enumerate() {
                let _ = writeln!(out, "statement {}: {}", i + 1, s.action);
                for a in &s.accesses {
                    let _ = writeln!(out, "  {} {}", a.action, a.object);
                }
            }
        }
        Err(e) => {
            let _ = writeln!(out, "unclassified: {}", e.0);
        }
    }
    if access.policy.is_none() {
        let _ = writeln!(out, "decision: permit (no [policy] configured)");
        return Ok((out, true));
    }
    let mut session = SessionPolicy::new(user, route, "cli", None, dialect, &database);
    match session.check(&access, sql, false) {
        Ok(_) => {
            let _ = writeln!(out, "decision: permit");
            Ok((out, true))
        }
        Err(d) => {
            let _ = writeln!(out, "decision: deny: {}", d.message());
            Ok((out, false))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_match_addresses() {
        let n = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nonsense").is_none());
    }

    #[test]
    fn route_globs() {
        use policies::glob;
        assert!(glob("sales_*", "sales_eu"));
        assert!(!glob("sales_*", "hr"));
        assert!(glob("*", "x"));
        assert!(glob("a?c", "abc"));
    }
}
