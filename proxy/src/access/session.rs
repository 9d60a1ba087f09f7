//! One client session's view of access control: checking each request (classification,
//! decision, audit event), the session state later statements are classified under
//! (search_path, SQL-level prepared statements), and the settings digest of cache keys.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use policies::{AccessRequest, Action, Decision, Policy};

use super::{AccessState, Denial, Permit};
use crate::audit::PendingEvent;
use crate::classify::{
    self, ascii_safe_encoding, Access, Classified, Dialect, Effect, Lexing, Scope,
};

/// Audit events a session holds for statements prepared and not yet run.
const MAX_PENDING_EVENTS: usize = 64;

/// One client session's view of access control.
pub struct SessionPolicy {
    pub user: String,
    pub route: String,
    pub protocol: &'static str,
    pub peer: Option<SocketAddr>,
    pub dialect: Dialect,
    /// MySQL: the current database; SQLite: unused.
    pub database: String,
    /// PostgreSQL: every schema an unqualified name may resolve to (empty: public).
    search_path: Vec<String>,
    /// SQL-level prepared statements and what they access.
    prepared: HashMap<String, Vec<Access>>,
    /// Audit events of permitted requests still running, oldest first.
    pending: Vec<PendingEvent>,
    /// The read cache is on in this instance: every request is classified (for
    /// invalidation and cacheability).
    cache_on: bool,
    /// A digest of everything that may change results in this session: startup
    /// parameters and every settings statement since (for cache keys).
    settings: String,
    /// A settings change whose fate or reach is unknown happened (inside a transaction,
    /// or an unclassified statement): the cache is not used again in this session.
    settings_unknown: bool,
    /// How the server lexes this session's statements now, and after `sql_mode = DEFAULT`.
    lexing: Lexing,
    default_lexing: Lexing,
    /// MySQL `lower_case_table_names` is not 0: table names compare in lower case.
    fold_table_names: bool,
    /// The client's encoding is not ASCII-safe (named): on policy routes every statement
    /// is refused, since sluice could not lex it as the server does.
    unsafe_encoding: Option<String>,
    /// The server's lexing is one sluice does not model (a default sql_mode of modes it
    /// does not know): on policy routes every statement is refused.
    lexing_unknown: bool,
    /// The lexing before a request that changed it, until that request's outcome is
    /// known (MySQL `SET sql_mode`: a failed SET changes nothing).
    lexing_before: Option<Lexing>,
    /// The request checked last changed settings; its outcome is not known yet.
    settings_pending: bool,
}

impl SessionPolicy {
    pub fn new(
        user: &str,
        route: &str,
        protocol: &'static str,
        peer: Option<SocketAddr>,
        dialect: Dialect,
        database: &str,
    ) -> SessionPolicy {
        SessionPolicy {
            user: user.to_string(),
            route: route.to_string(),
            protocol,
            peer,
            dialect,
            database: database.to_string(),
            search_path: Vec::new(),
            prepared: HashMap::new(),
            pending: Vec::new(),
            cache_on: false,
            settings: String::new(),
            settings_unknown: false,
            lexing: Lexing::default(),
            default_lexing: Lexing::default(),
            fold_table_names: true,
            unsafe_encoding: None,
            lexing_unknown: false,
            lexing_before: None,
            settings_pending: false,
        }
    }

    /// The outcome of the request checked last: a failed one did not change the lexing.
    pub fn settle(&mut self, ok: bool) {
        if let Some(before) = self.lexing_before.take() {
            if !ok {
                self.lexing = before;
            }
        }
        // a failed request that changed settings may have changed some of them (or
        // none): the cache key cannot follow what the server holds
        if std::mem::take(&mut self.settings_pending) && !ok {
            self.settings_unknown = true;
        }
    }

    /// The server lexes in a way sluice does not model: refuse every statement on policy
    /// routes.
    pub fn unknown_lexing(&mut self) {
        self.lexing_unknown = true;
    }

    /// Starts from the backend's lexing settings and name folding (MySQL: its `sql_mode`
    /// and `lower_case_table_names`).
    pub fn with_lexing(mut self, lexing: Lexing, fold_table_names: bool) -> SessionPolicy {
        self.lexing = lexing;
        self.default_lexing = lexing;
        self.fold_table_names = fold_table_names;
        self
    }

    /// The client's encoding (PostgreSQL `client_encoding`, MySQL character set), from
    /// the startup packet, the handshake or the server's report.
    pub fn client_encoding(&mut self, name: &str) {
        self.unsafe_encoding = (!ascii_safe_encoding(self.dialect, name)).then(|| name.to_string());
    }

    /// A setting the server reported (PostgreSQL ParameterStatus): the server's word is
    /// what later statements are lexed under.
    pub fn server_reported(&mut self, name: &str, value: &str) {
        if name.eq_ignore_ascii_case("standard_conforming_strings") {
            self.lexing.standard_strings = Some(value.eq_ignore_ascii_case("on"));
        } else if name.eq_ignore_ascii_case("client_encoding") {
            self.client_encoding(value);
        }
    }

    /// MySQL: whether the server reports NO_BACKSLASH_ESCAPES (status flags).
    pub fn server_backslash_escapes(&mut self, escapes: bool) {
        self.lexing.backslash_escapes = escapes;
    }

    /// How the server lexes this session's statements now.
    pub fn lexing(&self) -> Lexing {
        self.lexing
    }

    /// Turns on classification for the read cache, starting the settings digest from
    /// the startup parameters (all but the user, which the cache scope covers).
    pub fn with_cache(
        mut self,
        on: bool,
        startup: &std::collections::BTreeMap<String, String>,
    ) -> SessionPolicy {
        self.cache_on = on;
        if on {
            let mut text = String::new();
            for (k, v) in startup {
                if k != "user" {
                    text.push_str(&format!("{}:{k}={}:{v};", k.len(), v.len()));
                }
            }
            self.settings = digest_chain("", &text);
        }
        self
    }

    /// The settings digest for cache keys; None when the session's settings are unknown.
    pub fn cache_settings(&self) -> Option<&str> {
        (!self.settings_unknown).then_some(self.settings.as_str())
    }

    /// Who may share cached answers with this session: with policies, only the same
    /// user; without, everyone (every user may read everything).
    pub fn cache_scope(&self, access: &AccessState) -> &str {
        if access.policy.is_some() {
            &self.user
        } else {
            "*"
        }
    }

    /// Follows settings changes of a permitted request for cache keys.
    fn track_settings(&mut self, sql: &str, permit: &Permit, in_transaction: bool) {
        if !self.cache_on {
            return;
        }
        if permit.unclassified {
            self.settings_unknown = true;
            return;
        }
        // a function not known to be free of side effects may change settings
        // (set_config inside it): the session's settings are not known any more
        let calls = permit.statements.iter().any(|s| {
            s.accesses
                .iter()
                .any(|a| matches!(a.action, Action::Execute | Action::Admin))
                || s.action == Action::Execute
        });
        if calls {
            self.settings_unknown = true;
        }
        let changes = permit.statements.iter().any(|s| {
            matches!(s.action, Action::Session | Action::Admin)
                || s.effects.iter().any(|e| !matches!(e, Effect::Rollback))
        });
        if changes {
            self.settings_pending = true;
            if in_transaction
                || permit
                    .statements
                    .iter()
                    .any(|s| s.action == Action::Transaction)
            {
                self.settings_unknown = true;
            }
            self.settings = digest_chain(&self.settings, sql);
        }
    }

    /// Starts from a search_path given at login (`options=-c search_path=...`).
    pub fn with_search_path(mut self, value: Option<&str>) -> SessionPolicy {
        if let Some(v) = value {
            self.search_path = classify::split_search_path(v);
        }
        self
    }

    fn scope(&self) -> Scope<'_> {
        Scope {
            dialect: self.dialect,
            search_path: &self.search_path,
            database: &self.database,
            lexing: self.lexing,
            fold_table_names: self.fold_table_names,
        }
    }

    /// Checks one request (which may hold several statements) and records the decision
    /// in the audit log. Nothing of a denied request may be sent to the backend.
    pub fn check(
        &mut self,
        access: &AccessState,
        sql: &str,
        in_transaction: bool,
    ) -> Result<Permit, Denial> {
        let started = Instant::now();
        let auditing = access.audit.is_some();
        if access.policy.is_none() && !auditing && !self.cache_on {
            return Ok(Permit {
                generation: access.generation,
                text: sql.into(),
                statements: Arc::new([]),
                unclassified: true,
            });
        }
        if let Some(reason) = access.audit.as_ref().and_then(|a| a.refusing()) {
            return Err(Denial {
                access: None,
                reason,
            });
        }
        let classified = access.classified.classify(sql, &self.scope());
        let unclassified = classified.is_err();
        let seen: Arc<[Classified]> = classified.as_ref().map_or(Arc::new([]), Arc::clone);
        let result: Result<Arc<[Classified]>, Denial> = match (&access.policy, classified) {
            (None, Ok(statements)) => Ok(statements),
            (None, Err(_)) => Ok(Arc::new([])),
            (Some(_), Err(e)) if access.unparsed_allowed.contains(&self.route) => {
                tracing::debug!(reason = %e.0, "unclassified statement allowed by route");
                Ok(Arc::new([]))
            }
            (Some(_), Err(e)) => Err(Denial {
                access: None,
                reason: if e.0.starts_with("statement not supported") {
                    e.0
                } else {
                    format!("statement not supported by access policy: {}", e.0)
                },
            }),
            (Some(policy), Ok(statements)) => self.decide(policy, &statements).map(|()| statements),
        };
        if let Some(sink) = &access.audit {
            match &result {
                Ok(s) => {
                    // Many statements prepared and never executed: write their events.
                    if self.pending.len() >= MAX_PENDING_EVENTS {
                        self.finished(None);
                    }
                    let event = sink.statement(self, sql, s, Ok(()), started);
                    self.pending.push(event);
                }
                // nothing ran
                Err(d) => sink
                    .statement(self, sql, &seen, Err(d), started)
                    .finish(Some(0)),
            }
        }
        let statements = result?;
        self.apply(&statements, in_transaction);
        let permit = Permit {
            generation: access.generation,
            text: sql.into(),
            statements,
            unclassified,
        };
        self.track_settings(sql, &permit, in_transaction);
        Ok(permit)
    }

    /// Records a refusal that happened outside [`SessionPolicy::check`] (a frontend's
    /// own: a protocol message or form sluice does not accept) in the audit log.
    pub fn refused(
        &self,
        access: &AccessState,
        sql: &str,
        statements: &[Classified],
        denial: &Denial,
    ) {
        if let Some(sink) = &access.audit {
            sink.statement(self, sql, statements, Err(denial), Instant::now())
                .finish(Some(0));
        }
    }

    /// Whether audit events wait for their statements' outcome.
    pub fn awaiting_outcome(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The requests checked since the last call have run: their audit events are written
    /// with `rows`, the rows returned or changed. Callers call it at the end of a round
    /// trip that executed something (a prepare alone does not finish the event). When
    /// several requests wait (pipelined into one round trip, or prepared earlier and not
    /// run yet), the split is unknown and each event says null.
    pub fn finished(&mut self, rows: Option<u64>) {
        let rows = if self.pending.len() == 1 { rows } else { None };
        for event in self.pending.drain(..) {
            event.finish(rows);
        }
    }

    /// Checks a request classified earlier again when policies were reloaded since (a
    /// prepared statement about to run); a permit that passes is marked current.
    pub fn recheck(&self, access: &AccessState, permit: &mut Permit) -> Result<(), Denial> {
        if permit.generation == access.generation {
            return Ok(());
        }
        if let Some(policy) = &access.policy {
            if let Err(d) = self.decide(policy, &permit.statements) {
                self.refused(access, &permit.text, &permit.statements, &d);
                return Err(d);
            }
        }
        permit.generation = access.generation;
        Ok(())
    }

    fn decide(&self, policy: &Policy, statements: &[Classified]) -> Result<(), Denial> {
        if self.lexing_unknown {
            return Err(Denial {
                access: Some(Access {
                    action: policies::Action::Admin,
                    object: "sql_mode".into(),
                }),
                reason: "the server's sql_mode has modes whose lexing sluice does not model".into(),
            });
        }
        if let Some(enc) = &self.unsafe_encoding {
            return Err(Denial {
                access: Some(Access {
                    action: policies::Action::Admin,
                    object: "client_encoding".into(),
                }),
                reason: format!(
                    "the session's client encoding {enc} is not ASCII-safe: sluice cannot \
                     read statements in it as the server does"
                ),
            });
        }
        for stmt in statements {
            for e in &stmt.effects {
                let refused = match e {
                    Effect::Set { name, value, .. } => self.refuse_setting(name, value.as_deref()),
                    Effect::Database(text) => Some(Denial {
                        access: Some(Access {
                            action: policies::Action::Session,
                            object: "database".into(),
                        }),
                        reason: format!(
                            "{text}: a switch of database is accepted only alone (USE or \
                             COM_INIT_DB from a MySQL client), where sluice checks it and \
                             switches routes"
                        ),
                    }),
                    _ => None,
                };
                if let Some(d) = refused {
                    return Err(d);
                }
            }
            let prepared;
            let accesses: &[Access] = match &stmt.executes {
                Some(name) => match self.prepared.get(name) {
                    Some(a) => a,
                    None => {
                        return Err(Denial {
                            access: None,
                            reason: match name.strip_prefix("cursor ") {
                                Some(c) => {
                                    format!("cursor \"{c}\" was not declared through sluice")
                                }
                                None => format!(
                                    "prepared statement \"{name}\" was not prepared through \
                                     sluice"
                                ),
                            },
                        })
                    }
                },
                None => {
                    prepared = stmt
                        .effects
                        .iter()
                        .filter_map(|e| match e {
                            Effect::Prepare { accesses, .. } => Some(accesses.as_slice()),
                            _ => None,
                        })
                        .flatten()
                        .cloned()
                        .chain(stmt.accesses.iter().cloned())
                        .collect::<Vec<_>>();
                    &prepared
                }
            };
            for a in accesses {
                let decision = policy.check(&AccessRequest {
                    subject: &self.user,
                    domain: &self.route,
                    object: &a.object,
                    action: a.action,
                });
                if let Decision::Denied { reason } = decision {
                    return Err(Denial {
                        access: Some(a.clone()),
                        reason,
                    });
                }
            }
        }
        Ok(())
    }

    /// Applies what permitted statements change for later classification. Changes whose
    /// fate is unknown (inside a transaction that may roll back, SET LOCAL) widen the
    /// search path instead of replacing it, so a name is checked in every schema it may
    /// resolve to.
    fn apply(&mut self, statements: &[Classified], in_transaction: bool) {
        let mut uncertain = in_transaction;
        for stmt in statements {
            if stmt.action == Action::Transaction {
                uncertain = true;
            }
            for effect in &stmt.effects {
                match effect {
                    Effect::SearchPath { schemas, local } => {
                        self.search_path = classify::next_search_path(
                            &self.search_path,
                            schemas,
                            uncertain || *local,
                        );
                    }
                    Effect::Prepare { name, accesses } => {
                        self.prepared.insert(name.clone(), accesses.clone());
                    }
                    Effect::Deallocate(Some(name)) => {
                        self.prepared.remove(name);
                    }
                    Effect::Deallocate(None) => self.prepared.clear(),
                    Effect::Set { name, value, local } => {
                        self.apply_setting(name, value.as_deref(), uncertain || *local)
                    }
                    Effect::Database(_) | Effect::Rollback => {}
                    // a temporary table may shadow a cached one: no more cache
                    Effect::TempTable => self.settings_unknown = true,
                }
            }
        }
    }
}

impl SessionPolicy {
    /// Follows a setting that changes how later statements are lexed.
    fn apply_setting(&mut self, name: &str, value: Option<&str>, uncertain: bool) {
        match (self.dialect, name) {
            (Dialect::Postgres, "standard_conforming_strings") => {
                // unknown until the server's ParameterStatus says (the SET may fail, or
                // its transaction roll back)
                let _ = (value, uncertain);
                self.lexing.standard_strings = None;
            }
            (Dialect::Mysql, "sql_mode") => {
                let next = match value {
                    Some(v) if v.eq_ignore_ascii_case("default") => Some(self.default_lexing),
                    Some(v) => Lexing::from_sql_mode(v),
                    None => None,
                };
                // an unknown mode was refused on policy routes; elsewhere assume the
                // mode that makes the most text opaque to sluice's scanner
                self.lexing_before.get_or_insert(self.lexing);
                self.lexing = next.unwrap_or(Lexing {
                    ansi_quotes: true,
                    ..self.lexing
                });
            }
            (_, n) if ENCODING_SETTINGS.contains(&n) => match value {
                Some(v) if v.eq_ignore_ascii_case("default") => self.unsafe_encoding = None,
                Some(v) => self.client_encoding(v),
                None => self.unsafe_encoding = Some("(unknown)".into()),
            },
            _ => {}
        }
    }

    /// Why a permitted-looking setting is refused: one that would make sluice lex later
    /// statements differently from the server.
    fn refuse_setting(&self, name: &str, value: Option<&str>) -> Option<Denial> {
        let deny = |action, object: &str, reason: String| {
            Some(Denial {
                access: Some(Access {
                    action,
                    object: object.to_string(),
                }),
                reason,
            })
        };
        match (self.dialect, name, value) {
            (_, n, v) if ENCODING_SETTINGS.contains(&n) => {
                let safe = v.is_some_and(|v| {
                    v.eq_ignore_ascii_case("default") || ascii_safe_encoding(self.dialect, v)
                });
                (!safe).then_some(()).and_then(|()| {
                    deny(
                        policies::Action::Admin,
                        "client_encoding",
                        format!(
                            "client encoding {} is not ASCII-safe: sluice cannot read                              statements in it as the server does",
                            v.unwrap_or("(an expression)")
                        ),
                    )
                })
            }
            (Dialect::Mysql, "sql_mode", v) => {
                let known = v.is_some_and(|v| {
                    v.eq_ignore_ascii_case("default") || Lexing::from_sql_mode(v).is_some()
                });
                (!known).then_some(()).and_then(|()| {
                    deny(
                        policies::Action::Session,
                        "sql_mode",
                        "sluice follows sql_mode only when it is set to a literal list of \
                         modes it knows"
                            .into(),
                    )
                })
            }
            (Dialect::Postgres, "standard_conforming_strings", None) => deny(
                policies::Action::Session,
                "standard_conforming_strings",
                "sluice follows standard_conforming_strings only when it is set to a literal"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// Settings that name the client's encoding.
const ENCODING_SETTINGS: &[&str] = &[
    "client_encoding",
    "names",
    "character_set_client",
    "character set",
    "charset",
];

impl Drop for SessionPolicy {
    /// A session that ends mid-request still writes one event per decision.
    fn drop(&mut self) {
        self.finished(None);
    }
}

/// The next link of a digest chain: sha256(previous, text), hex.
fn digest_chain(previous: &str, text: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(previous.as_bytes());
    h.update([0]);
    h.update(text.as_bytes());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The search_path a PostgreSQL client set at login, if any (`search_path` or
/// `options=-c search_path=...`).
pub fn startup_search_path(params: &std::collections::BTreeMap<String, String>) -> Option<String> {
    if let Some(v) = params.get("search_path") {
        return Some(v.clone());
    }
    let options = params.get("options")?;
    let idx = options.find("search_path=")?;
    let rest = &options[idx + "search_path=".len()..];
    Some(rest.split_whitespace().next().unwrap_or("").to_string())
}
