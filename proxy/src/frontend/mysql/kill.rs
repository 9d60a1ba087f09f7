//! `KILL [QUERY | CONNECTION] <id>` with the connection ids sluice hands to MySQL clients
//! (in the greeting; what `mysql_thread_id()` returns and the mysql CLI's Ctrl-C sends):
//! a registry of live sessions and the server connection each holds right now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use backends::mysql::MyPool;
use tokio_util::sync::CancellationToken;

use super::write::MyError;

/// The server connection (pool and thread id) a session holds, if any.
type ServerSlot = Arc<Mutex<Option<(Arc<MyPool>, u32)>>>;

struct Entry {
    user: String,
    server: ServerSlot,
    kill: CancellationToken,
}

/// Live MySQL sessions by connection id.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<u32, Entry>>);

/// A session's registration; removed when dropped.
pub(super) struct Registration {
    id: u32,
    sessions: Arc<Sessions>,
    server: ServerSlot,
    /// Cancelled by `KILL CONNECTION` from another session.
    pub(super) kill: CancellationToken,
}

impl Registration {
    /// Records the server connection now serving the session (`None` once given back).
    pub(super) fn set_server(&self, server: Option<(Arc<MyPool>, u32)>) {
        *self.server.lock().unwrap_or_else(|p| p.into_inner()) = server;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.id);
    }
}

/// What a KILL statement asks.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Kill {
    pub(super) id: u32,
    pub(super) query_only: bool,
}

/// Parses `KILL [HARD | SOFT] [CONNECTION | QUERY] <id>`.
pub(super) fn parse(sql: &str) -> Option<Kill> {
    let upper = sql.trim().trim_end_matches(';').to_ascii_uppercase();
    let words: Vec<&str> = upper.split_ascii_whitespace().collect();
    let mut rest = match words.as_slice() {
        ["KILL", rest @ ..] => rest,
        _ => return None,
    };
    if let ["HARD" | "SOFT", tail @ ..] = rest {
        rest = tail;
    }
    let (query_only, rest) = match rest {
        ["QUERY", tail @ ..] => (true, tail),
        ["CONNECTION", tail @ ..] => (false, tail),
        _ => (false, rest),
    };
    match rest {
        [id] => id.parse().ok().map(|id| Kill { id, query_only }),
        _ => None,
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Entry>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn register(self: &Arc<Self>, id: u32, user: &str) -> Registration {
        let server: ServerSlot = Arc::default();
        let kill = CancellationToken::new();
        self.lock().insert(
            id,
            Entry {
                user: user.to_string(),
                server: server.clone(),
                kill: kill.clone(),
            },
        );
        Registration {
            id,
            sessions: self.clone(),
            server,
            kill,
        }
    }

    /// Runs a KILL from `user`: only its own sessions may be killed. The running query is
    /// killed on the server; `KILL CONNECTION` also ends the session.
    pub(super) async fn kill(&self, user: &str, kill: &Kill) -> Result<(), MyError> {
        let (server, token) = {
            let map = self.lock();
            let Some(entry) = map.get(&kill.id) else {
                return Err(MyError::new(
                    1094,
                    "HY000",
                    format!("Unknown thread id: {}", kill.id),
                ));
            };
            if entry.user != user {
                return Err(MyError::new(
                    1095,
                    "HY000",
                    format!("You are not owner of thread {}", kill.id),
                ));
            }
            let server = entry
                .server
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            (server, entry.kill.clone())
        };
        if let Some((pool, thread)) = server {
            if let Err(e) = pool.run(&format!("KILL QUERY {thread}")).await {
                tracing::warn!(error = %e, thread, "KILL QUERY on the server failed");
            }
        }
        if !kill.query_only {
            token.cancel();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kill_forms() {
        let k = parse;
        assert_eq!(
            k("kill query 12;"),
            Some(Kill {
                id: 12,
                query_only: true
            })
        );
        assert_eq!(
            k("KILL 7"),
            Some(Kill {
                id: 7,
                query_only: false
            })
        );
        assert_eq!(
            k("KILL HARD CONNECTION 7"),
            Some(Kill {
                id: 7,
                query_only: false
            })
        );
        assert_eq!(k("KILL USER bob"), None);
        assert_eq!(k("KILLS 1"), None);
    }
}
