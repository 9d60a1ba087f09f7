//! The unnamed portal of a cache hit: its stored answer sent as Executes ask for it.

use backends::postgres::wire::Frame;
use bytes::{Bytes, BytesMut};

use super::simple_message;
use crate::frontend::postgres::rows_in;

/// The unnamed portal, answered from the cache.
pub(super) struct CachedPortal {
    pub(super) row_description: Option<Bytes>,
    /// The DataRows not sent yet, then the CommandComplete.
    pub(super) rows: Bytes,
    /// Whether an Execute sent rows already: what follows is counted anew.
    pub(super) stepped: bool,
    /// The client's Bind, for when the portal must run on the server after all.
    pub(super) bind: Frame,
    /// Where the statement name starts in the Bind body.
    pub(super) at: usize,
}

/// What one Execute of a cached portal sends.
pub(super) struct Step {
    pub(super) answer: Bytes,
    pub(super) rows: u64,
}

impl CachedPortal {
    /// The answer to an Execute of at most `max` rows (0: all), as PostgreSQL gives it for
    /// a portal run in steps: `max` rows and PortalSuspended while the limit is reached
    /// (even by the last row); else the rest and a CommandComplete counting the rows of
    /// this Execute. None when the stored CommandComplete is not a `SELECT n` that can be
    /// recounted.
    pub(super) fn step(&mut self, max: usize) -> Option<Step> {
        let mut at = 0;
        let mut taken = 0;
        while max == 0 || taken < max {
            match self.rows.get(at) {
                Some(b'D') => {}
                _ => break,
            }
            let len = self.rows.get(at + 1..at + 5)?;
            let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
            at += 1 + len;
            if at > self.rows.len() {
                // not an answer sluice stored
                return None;
            }
            taken += 1;
        }
        let rest = self.rows.slice(at..);
        let recountable = last_message(&rest).is_some_and(|m| {
            m.get(5..)
                .is_some_and(|b| m[0] == b'C' && b.starts_with(b"SELECT "))
        });
        if max > 0 && taken == max {
            // a portal stepped through cannot be run on the server after all: a Describe
            // must be answerable from the cache
            if !recountable || self.row_description.is_none() {
                return None;
            }
            let mut answer = BytesMut::with_capacity(at + 5);
            answer.extend_from_slice(&self.rows[..at]);
            answer.extend_from_slice(&simple_message(b's', &[]));
            self.rows = rest;
            self.stepped = true;
            return Some(Step {
                answer: answer.freeze(),
                rows: taken as u64,
            });
        }
        if !self.stepped {
            // the whole answer in one Execute: as the server sent it
            let answer = std::mem::take(&mut self.rows);
            let rows = rows_in(&answer);
            self.rows = complete_tag(0);
            self.stepped = true;
            return Some(Step { answer, rows });
        }
        if !recountable {
            return None;
        }
        let mut answer = BytesMut::with_capacity(at + 32);
        answer.extend_from_slice(&self.rows[..at]);
        answer.extend_from_slice(&complete_tag(taken));
        // the portal is at its end: further Executes get no rows
        self.rows = complete_tag(0);
        Some(Step {
            answer: answer.freeze(),
            rows: taken as u64,
        })
    }
}

/// The last of a sequence of messages.
fn last_message(mut messages: &[u8]) -> Option<&[u8]> {
    let mut last = None;
    while messages.len() >= 5 {
        let len = u32::from_be_bytes(messages[1..5].try_into().ok()?) as usize;
        let (message, rest) = messages.split_at_checked(1 + len)?;
        last = Some(message);
        messages = rest;
    }
    last
}

/// A CommandComplete `SELECT n`.
pub(super) fn complete_tag(n: usize) -> Bytes {
    simple_message(b'C', format!("SELECT {n}\0").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn portal(rows: usize, tag: &str) -> CachedPortal {
        let mut answer = BytesMut::new();
        for i in 0..rows {
            let mut body = 1u16.to_be_bytes().to_vec();
            body.extend_from_slice(&1u32.to_be_bytes());
            body.push(b'0' + i as u8);
            answer.extend_from_slice(&simple_message(b'D', &body));
        }
        answer.extend_from_slice(&simple_message(b'C', format!("{tag}\0").as_bytes()));
        CachedPortal {
            row_description: Some(simple_message(b'T', &[0, 0])),
            rows: answer.freeze(),
            stepped: false,
            bind: {
                let mut b = BytesMut::from(&simple_message(b'B', &[0; 8])[..]);
                backends::postgres::wire::split_frame(&mut b, 1 << 20)
                    .unwrap()
                    .unwrap()
            },
            at: 1,
        }
    }

    /// The message tags of an answer, CommandComplete with its tag.
    fn shape(answer: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = answer;
        while rest.len() >= 5 {
            let end = 1 + u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            out.push(match rest[0] {
                b'C' => String::from_utf8_lossy(&rest[5..end - 1]).into_owned(),
                t => (t as char).to_string(),
            });
            rest = &rest[end..];
        }
        out
    }

    fn steps(p: &mut CachedPortal, limits: &[usize]) -> Vec<Vec<String>> {
        limits
            .iter()
            .map(|&n| shape(&p.step(n).expect("answerable").answer))
            .collect()
    }

    // The answers PostgreSQL 15 gives to Executes with these row limits of one portal
    // over three rows (`SELECT g FROM generate_series(1, 3) g`).
    #[test]
    fn a_portal_run_in_steps_is_answered_as_the_server_does() {
        assert_eq!(
            steps(&mut portal(3, "SELECT 3"), &[2, 2, 2]),
            [vec!["D", "D", "s"], vec!["D", "SELECT 1"], vec!["SELECT 0"]]
        );
        assert_eq!(
            steps(&mut portal(3, "SELECT 3"), &[3, 1, 0]),
            [vec!["D", "D", "D", "s"], vec!["SELECT 0"], vec!["SELECT 0"]]
        );
        assert_eq!(
            steps(&mut portal(3, "SELECT 3"), &[0, 0]),
            [vec!["D", "D", "D", "SELECT 3"], vec!["SELECT 0"]]
        );
        // one row, one row asked for: the limit is reached, so the portal is suspended
        assert_eq!(
            steps(&mut portal(1, "SELECT 1"), &[1, 1]),
            [vec!["D", "s"], vec!["SELECT 0"]]
        );
    }

    #[test]
    fn a_portal_that_cannot_be_stepped_through_from_the_cache_is_not() {
        let mut p = portal(2, "SELECT 2");
        p.row_description = None;
        assert!(p.step(1).is_none(), "a Describe could not be answered");
        let mut p = portal(2, "SELECT 2");
        p.rows = p.rows.slice(..8);
        assert!(p.step(1).is_none(), "a truncated answer");
        let mut p = portal(2, "FETCH 2");
        assert!(p.step(1).is_none(), "not a SELECT tag");
        assert_eq!(shape(&p.step(0).unwrap().answer), ["D", "D", "FETCH 2"]);
    }
}
