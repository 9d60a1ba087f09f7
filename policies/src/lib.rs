//! sluice access policy decisions: a casbin model (RBAC with domains) and policy files,
//! answering one question, purely: may this subject do this action on this object in this
//! domain? This crate never parses SQL; the proxy classifies statements and asks here.
//!
//! Decisions fail closed: no matching rule is a denial, and one matching deny rule beats
//! every allow. Decisions are cached per policy; a reload builds a new [`Policy`].

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use casbin::function_map::OperatorFunction;
use casbin::rhai::Dynamic;
use casbin::{CoreApi, DefaultModel, Enforcer, StringAdapter};

/// The shipped model, `policies/model.conf`.
pub const DEFAULT_MODEL: &str = include_str!("../model.conf");

/// Most cached decisions per policy; the cache is emptied when it is full.
const CACHE_LIMIT: usize = 64 * 1024;

/// What a statement does to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Select,
    Insert,
    Update,
    Delete,
    Ddl,
    Truncate,
    CopyIn,
    CopyOut,
    /// CALL, EXECUTE, DO, functions that are not known to be side-effect free.
    Execute,
    /// SET, SHOW, RESET and other session settings.
    Session,
    /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT.
    Transaction,
    /// GRANT, roles, server files and programs, server administration.
    Admin,
    Other,
}

impl Action {
    pub const ALL: [Action; 13] = [
        Action::Select,
        Action::Insert,
        Action::Update,
        Action::Delete,
        Action::Ddl,
        Action::Truncate,
        Action::CopyIn,
        Action::CopyOut,
        Action::Execute,
        Action::Session,
        Action::Transaction,
        Action::Admin,
        Action::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Select => "select",
            Action::Insert => "insert",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Ddl => "ddl",
            Action::Truncate => "truncate",
            Action::CopyIn => "copy_in",
            Action::CopyOut => "copy_out",
            Action::Execute => "execute",
            Action::Session => "session",
            Action::Transaction => "transaction",
            Action::Admin => "admin",
            Action::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One question for the policy.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// The authenticated user.
    pub subject: &'a str,
    /// The route the client is connected to.
    pub domain: &'a str,
    /// `schema.table`, `database.table`, a function, a setting name, or `*`.
    pub object: &'a str,
    pub action: Action,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Permit,
    Denied { reason: String },
}

impl Decision {
    pub fn is_permit(&self) -> bool {
        matches!(self, Decision::Permit)
    }
}

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}:{line}: {message}")]
    Line {
        origin: String,
        line: usize,
        message: String,
    },
    #[error("model: {0}")]
    Model(String),
    #[error("policy: {0}")]
    Casbin(String),
}

/// A loaded model and its rules, ready to answer.
pub struct Policy {
    enforcer: Enforcer,
    /// The same rules under "some allow matches": tells a deny rule from a missing allow.
    allow_only: Option<Enforcer>,
    rules: usize,
    cache: RwLock<HashMap<String, Decision>>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("rules", &self.rules)
            .finish()
    }
}

impl Policy {
    /// Loads a model file (None: the shipped model) and policy files, in order.
    pub fn load(model: Option<&Path>, files: &[PathBuf]) -> Result<Policy, PolicyError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let model_text = match model {
            Some(path) => read(path)?,
            None => DEFAULT_MODEL.to_string(),
        };
        let mut sources = Vec::new();
        for path in files {
            sources.push((path.display().to_string(), read(path)?));
        }
        let sources: Vec<(&str, &str)> = sources
            .iter()
            .map(|(o, t)| (o.as_str(), t.as_str()))
            .collect();
        Policy::from_text(&model_text, &sources)
    }

    /// Builds a policy from model text and policy texts (each named for errors).
    pub fn from_text(model: &str, sources: &[(&str, &str)]) -> Result<Policy, PolicyError> {
        let mut csv = String::new();
        let mut rules = 0;
        for (origin, text) in sources {
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                check_line(line).map_err(|message| PolicyError::Line {
                    origin: origin.to_string(),
                    line: n + 1,
                    message,
                })?;
                rules += 1;
                csv.push_str(line);
                csv.push('\n');
            }
        }
        let enforcer = build(model, &csv)?;
        let allow_only = model
            .contains(DENY_EFFECT)
            .then(|| build(&model.replace(DENY_EFFECT, ALLOW_EFFECT), &csv))
            .transpose()?;
        Ok(Policy {
            enforcer,
            allow_only,
            rules,
            cache: RwLock::new(HashMap::new()),
        })
    }

    /// How many rules (p and g lines) the policy holds.
    pub fn rules(&self) -> usize {
        self.rules
    }

    /// Decides one request.
    pub fn check(&self, req: &AccessRequest<'_>) -> Decision {
        let key = format!(
            "{}\0{}\0{}\0{}",
            req.subject,
            req.domain,
            req.object,
            req.action.as_str()
        );
        if let Some(d) = self.cache.read().expect("policy cache").get(&key) {
            return d.clone();
        }
        let decision = self.decide(req);
        let mut cache = self.cache.write().expect("policy cache");
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, decision.clone());
        decision
    }

    fn decide(&self, req: &AccessRequest<'_>) -> Decision {
        let args = (req.subject, req.domain, req.object, req.action.as_str());
        match self.enforcer.enforce(args) {
            Ok(true) => Decision::Permit,
            Ok(false) => {
                let allowed = self
                    .allow_only
                    .as_ref()
                    .is_some_and(|e| e.enforce(args).unwrap_or(false));
                let reason = if allowed {
                    format!(
                        "a deny rule forbids {} on {} for {}",
                        req.action, req.object, req.subject
                    )
                } else {
                    format!(
                        "no rule allows {} on {} for {}",
                        req.action, req.object, req.subject
                    )
                };
                Decision::Denied { reason }
            }
            Err(e) => Decision::Denied {
                reason: format!("policy evaluation failed: {e}"),
            },
        }
    }
}

const DENY_EFFECT: &str = "some(where (p.eft == allow)) && !some(where (p.eft == deny))";
const ALLOW_EFFECT: &str = "some(where (p.eft == allow))";

/// An enforcer over model text and policy lines, matching role domains by glob.
fn build(model: &str, csv: &str) -> Result<Enforcer, PolicyError> {
    let mut enforcer = block_on(async {
        let model = DefaultModel::from_str(model)
            .await
            .map_err(|e| PolicyError::Model(e.to_string()))?;
        Enforcer::new(model, StringAdapter::new(csv))
            .await
            .map_err(|e| PolicyError::Casbin(e.to_string()))
    })?;
    // casbin's own globMatch builds a matcher on every call (milliseconds per decision
    // over a few hundred rules); sluice's patterns only use * and ?, matched in place.
    enforcer.add_function("globMatch", OperatorFunction::Arg2(glob_match_dynamic));
    enforcer
        .get_role_manager()
        .write()
        .matching_fn(None, Some(glob_match));
    // A model missing a section loads but cannot decide: find out now, not per statement.
    enforcer
        .enforce(("", "", "", "select"))
        .map_err(|e| PolicyError::Model(e.to_string()))?;
    Ok(enforcer)
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters
/// (including none and dots) and `?` for one character. Linear in the inputs for
/// patterns with one `*`, and never worse than their product.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // where the last * was, and the name position it is currently made to cover up to
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                // let the last * swallow one more character and retry
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    pi = sp + 1;
                    ni = sn + 1;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// casbin's `globMatch(name, pattern)` and domain matching, argument order included.
fn glob_match(name: &str, pattern: &str) -> bool {
    glob(pattern, name)
}

fn glob_match_dynamic(name: Dynamic, pattern: Dynamic) -> Dynamic {
    let text = |d: Dynamic| d.into_immutable_string().unwrap_or_default();
    glob(&text(pattern), &text(name)).into()
}

/// Checks one policy line's shape: `p, sub, dom, obj, act, eft` or `g, user, role, dom`.
fn check_line(line: &str) -> Result<(), String> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let pattern_ok = |f: &str| !f.is_empty() && !f.contains(['[', ']', '{', '}', '\\']);
    match fields.first().copied() {
        Some("p") => {
            if fields.len() != 6 {
                return Err(format!(
                    "a p rule has 5 fields (subject, route, object, action, allow|deny); found {}",
                    fields.len() - 1
                ));
            }
            if fields[1].is_empty() {
                return Err("empty subject".into());
            }
            for f in [fields[2], fields[3]] {
                if !pattern_ok(f) {
                    return Err(format!(
                        "invalid pattern {f:?}: use names with * and ? wildcards"
                    ));
                }
            }
            if fields[4] != "*" && Action::parse(fields[4]).is_none() {
                let known: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
                return Err(format!(
                    "unknown action {:?}; known: {} or *",
                    fields[4],
                    known.join(", ")
                ));
            }
            if !matches!(fields[5], "allow" | "deny") {
                return Err(format!(
                    "effect must be allow or deny, found {:?}",
                    fields[5]
                ));
            }
            Ok(())
        }
        Some("g") => {
            if fields.len() != 4 {
                return Err(format!(
                    "a g rule has 3 fields (user, role, route); found {}",
                    fields.len() - 1
                ));
            }
            if fields[1].is_empty() || fields[2].is_empty() || !pattern_ok(fields[3]) {
                return Err("a g rule needs a user, a role and a route pattern".into());
            }
            Ok(())
        }
        _ => Err("a rule starts with p or g".into()),
    }
}

/// Runs a future that never waits on I/O (model and policy text are already in memory).
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests;
