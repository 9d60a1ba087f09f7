//! The audit log: one JSON line per access decision and per login attempt, written by a
//! dedicated thread from a bounded queue to stdout or a file.
//!
//! When the queue is full or the sink fails, `best_effort` drops events (counted in
//! `sluice_audit_dropped_total`) and `strict` refuses new statements until events can be
//! written again.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::access::{Denial, SessionPolicy};
use crate::classify::Classified;
use crate::config::{Audit, AuditMode, AuditStatements};
use crate::metrics as m;

/// A running audit sink.
pub struct AuditSink {
    tx: SyncSender<String>,
    full_text: bool,
    strict: bool,
    failed: Arc<AtomicBool>,
    /// The settings it was built from (a reload with equal settings keeps it).
    pub settings: String,
}

impl AuditSink {
    /// Opens the sink and starts its writer thread; None when auditing is off.
    pub fn start(config: &Audit) -> std::io::Result<Option<Arc<AuditSink>>> {
        if !config.enabled {
            return Ok(None);
        }
        let mut out: Box<dyn Write + Send> = if config.sink == "stdout" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&config.sink)?,
            )
        };
        let (tx, rx) = sync_channel::<String>(config.buffer);
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        std::thread::Builder::new()
            .name("sluice-audit".into())
            .spawn(move || {
                while let Ok(line) = rx.recv() {
                    let mut ok = out.write_all(line.as_bytes()).is_ok();
                    // write what else is queued, then flush once
                    while let Ok(line) = rx.try_recv() {
                        ok &= out.write_all(line.as_bytes()).is_ok();
                    }
                    ok &= out.flush().is_ok();
                    if !ok {
                        metrics::counter!(m::AUDIT_DROPPED, "reason" => "sink_error").increment(1);
                    }
                    flag.store(!ok, Ordering::Release);
                }
            })?;
        Ok(Some(Arc::new(AuditSink {
            tx,
            full_text: config.statements == AuditStatements::Full,
            strict: config.mode == AuditMode::Strict,
            failed,
            settings: format!("{config:?}"),
        })))
    }

    /// In strict mode, why statements are refused now (the sink failed or is full).
    pub fn refusing(&self) -> Option<String> {
        (self.strict && self.failed.load(Ordering::Acquire))
            .then(|| "the audit log cannot be written; statements are refused".to_string())
    }

    /// Queues one event. False when it was dropped.
    pub fn record(&self, event: Value) -> bool {
        let mut line = event.to_string();
        line.push('\n');
        match self.tx.try_send(line) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                metrics::counter!(m::AUDIT_DROPPED, "reason" => "full").increment(1);
                if self.strict {
                    self.failed.store(true, Ordering::Release);
                }
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                metrics::counter!(m::AUDIT_DROPPED, "reason" => "sink_error").increment(1);
                self.failed.store(true, Ordering::Release);
                false
            }
        }
    }

    /// The event of one statement decision, without its outcome: the caller finishes it
    /// with the rows the statement produced once it ran (or at once, when it was denied).
    pub fn statement(
        self: &Arc<Self>,
        session: &SessionPolicy,
        sql: &str,
        statements: &[Classified],
        decision: Result<(), &Denial>,
        started: Instant,
    ) -> PendingEvent {
        let mut actions: Vec<&str> = statements.iter().map(|s| s.action.as_str()).collect();
        let mut objects: Vec<String> = statements
            .iter()
            .flat_map(|s| s.accesses.iter())
            .map(|a| format!("{}:{}", a.action, a.object))
            .collect();
        // a refusal names what it refused, even when nothing could be classified
        if let Err(d) = decision {
            let (action, object) = match &d.access {
                Some(a) => (a.action.as_str(), a.object.as_str()),
                None => ("other", "*"),
            };
            if actions.is_empty() {
                actions.push(action);
            }
            objects.push(format!("{action}:{object}"));
        }
        actions.sort();
        actions.dedup();
        objects.sort();
        objects.dedup();
        let (decision, reason) = match decision {
            Ok(()) => ("permit", Value::Null),
            Err(d) => ("deny", Value::String(d.message())),
        };
        let mut event = json!({
            "time": now_rfc3339(),
            "event": "statement",
            "protocol": session.protocol,
            "user": session.user,
            "client": client(session.peer),
            "route": session.route,
            "action": actions,
            "objects": objects,
            "digest": digest(sql),
            "decision": decision,
            "reason": reason,
        });
        if self.full_text {
            event["statement"] = Value::String(sql.to_string());
        }
        PendingEvent {
            sink: self.clone(),
            event,
            started,
        }
    }
}

/// A statement event waiting for its statement to finish.
pub struct PendingEvent {
    sink: Arc<AuditSink>,
    event: Value,
    started: Instant,
}

impl PendingEvent {
    /// Completes the event with the time since the decision began and the rows the
    /// statement returned or changed (None: unknown, e.g. the connection was lost), and
    /// queues it.
    pub fn finish(mut self, rows: Option<u64>) {
        self.event["duration_us"] = json!(self.started.elapsed().as_micros() as u64);
        self.event["rows"] = json!(rows);
        self.sink.record(self.event);
    }
}

/// The rows a PostgreSQL CommandComplete tag reports (`SELECT 5`, `INSERT 0 3`,
/// `UPDATE 2`, `COPY 10`); 0 for tags without a count (`CREATE TABLE`).
pub fn command_tag_rows(tag: &[u8]) -> u64 {
    let tag = tag.strip_suffix(&[0]).unwrap_or(tag);
    let last = tag.rsplit(|&b| b == b' ').next().unwrap_or_default();
    if tag.len() == last.len() {
        return 0;
    }
    std::str::from_utf8(last)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The event of one login attempt.
pub fn login_event(
    protocol: &str,
    user: &str,
    peer: Option<SocketAddr>,
    route: &str,
    outcome: Result<(), &str>,
) -> Value {
    let (decision, reason) = match outcome {
        Ok(()) => ("permit", Value::Null),
        Err(r) => ("deny", Value::String(r.to_string())),
    };
    json!({
        "time": now_rfc3339(),
        "event": "login",
        "protocol": protocol,
        "user": user,
        "client": client(peer),
        "route": route,
        "decision": decision,
        "reason": reason,
    })
}

fn client(peer: Option<SocketAddr>) -> Value {
    peer.map_or(Value::Null, |p| Value::String(p.to_string()))
}

/// A short, stable hash of the statement text: the same text gives the same digest.
fn digest(sql: &str) -> String {
    let hash = Sha256::digest(sql.trim().as_bytes());
    hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Now as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn now_rfc3339() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil-from-days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::command_tag_rows;

    #[test]
    fn row_counts_from_command_tags() {
        for (tag, rows) in [
            (&b"SELECT 5\0"[..], 5),
            (b"INSERT 0 3", 3),
            (b"UPDATE 12", 12),
            (b"DELETE 0", 0),
            (b"COPY 10", 10),
            (b"MERGE 2", 2),
            (b"CREATE TABLE", 0),
            (b"BEGIN", 0),
            (b"", 0),
        ] {
            assert_eq!(
                command_tag_rows(tag),
                rows,
                "{:?}",
                String::from_utf8_lossy(tag)
            );
        }
    }
}
