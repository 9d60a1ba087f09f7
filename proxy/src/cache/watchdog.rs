//! Deadlines for Redis calls without a timer per call.
//!
//! A tokio timer registered while the runtime's driver has no earlier one makes the
//! runtime wake its driver (a write to an eventfd, and a spurious turn of the event loop),
//! which on a cache hit costs about as much as the hit's own work. Here one task looks at
//! the calls in flight every half deadline and wakes those past theirs: a call ends at
//! most half a deadline late, and a busy cache registers one timer per half deadline
//! instead of one per lookup. The task stops when no call is in flight.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The calls in flight of one store, with their deadlines.
#[derive(Default)]
pub struct Watchdog {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    calls: HashMap<u64, (Instant, Waker)>,
    /// Whether the task that wakes late calls runs.
    watching: bool,
}

impl Watchdog {
    /// Runs `call` until it ends or `limit` has passed (None).
    pub async fn run<F: Future>(self: &Arc<Self>, limit: Duration, call: F) -> Option<F::Output> {
        let id = {
            let mut state = self.lock();
            state.next_id += 1;
            state.next_id
        };
        Deadline {
            call: Box::pin(call),
            id,
            deadline: Instant::now() + limit,
            period: limit / 2,
            dog: self,
            registered: false,
        }
        .await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the calls past their deadline every `period` while any is in flight.
    async fn watch(self: Arc<Self>, period: Duration) {
        loop {
            tokio::time::sleep(period).await;
            let now = Instant::now();
            let late: Vec<Waker> = {
                let mut state = self.lock();
                if state.calls.is_empty() {
                    state.watching = false;
                    return;
                }
                state
                    .calls
                    .values()
                    .filter(|(deadline, _)| *deadline <= now)
                    .map(|(_, waker)| waker.clone())
                    .collect()
            };
            for waker in late {
                waker.wake();
            }
        }
    }
}

struct Deadline<'a, F: Future> {
    call: Pin<Box<F>>,
    id: u64,
    deadline: Instant,
    period: Duration,
    dog: &'a Arc<Watchdog>,
    registered: bool,
}

impl<F: Future> Future for Deadline<'_, F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(v) = self.call.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if Instant::now() >= self.deadline {
            return Poll::Ready(None);
        }
        let start_watching = {
            let mut state = self.dog.lock();
            match state.calls.get_mut(&self.id) {
                Some((_, waker)) if waker.will_wake(cx.waker()) => {}
                Some((_, waker)) => *waker = cx.waker().clone(),
                None => {
                    state
                        .calls
                        .insert(self.id, (self.deadline, cx.waker().clone()));
                }
            }
            !std::mem::replace(&mut state.watching, true)
        };
        self.registered = true;
        if start_watching {
            tokio::spawn(self.dog.clone().watch(self.period));
        }
        Poll::Pending
    }
}

impl<F: Future> Drop for Deadline<'_, F> {
    fn drop(&mut self) {
        if self.registered {
            self.dog.lock().calls.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_that_ends_in_time_gives_its_answer() {
        let dog = Arc::new(Watchdog::default());
        let v = dog
            .run(Duration::from_millis(200), async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                7
            })
            .await;
        assert_eq!(v, Some(7));
        assert!(dog.lock().calls.is_empty());
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_ends_within_half_a_deadline_more() {
        let dog = Arc::new(Watchdog::default());
        let started = Instant::now();
        let v = dog
            .run(Duration::from_millis(100), std::future::pending::<()>())
            .await;
        assert_eq!(v, None);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert!(dog.lock().calls.is_empty());
        // the watching task stops once nothing is in flight
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!dog.lock().watching);
    }
}
