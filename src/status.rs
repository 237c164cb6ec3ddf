//! What can be reported about a board: live counters the worker bumps and the
//! snapshot the supervisor hands out (today to tests and logs; tomorrow to the
//! control socket behind `usb9pfsd status`).
//!
//! It must never hold anything a worker needs to forward frames: losing a
//! status reader never slows or stops a board.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Per-board counters, shared between the supervisor (reader) and the
/// board's worker (writer). Relaxed atomics: they are statistics.
#[derive(Debug, Default)]
pub struct Counters {
    pub t_messages: AtomicU64,
    pub t_bytes: AtomicU64,
    pub r_messages: AtomicU64,
    pub r_bytes: AtomicU64,
    /// Server replies other than Rversion: the board got work done, not just
    /// a handshake (what the supervisor's restart backoff counts as served).
    pub served: AtomicU64,
    /// Error replies usb9pfsd wrote itself because the server could not answer.
    pub error_replies: AtomicU64,
    /// 9P sessions opened with the server (one per Tversion that connected).
    pub sessions: AtomicU64,
    /// Live server sessions that broke.
    pub backend_failures: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CounterSnapshot {
    pub t_messages: u64,
    pub t_bytes: u64,
    pub r_messages: u64,
    pub r_bytes: u64,
    pub served: u64,
    pub error_replies: u64,
    pub sessions: u64,
    pub backend_failures: u64,
}

impl Counters {
    pub fn snapshot(&self) -> CounterSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterSnapshot {
            t_messages: g(&self.t_messages),
            t_bytes: g(&self.t_bytes),
            r_messages: g(&self.r_messages),
            r_bytes: g(&self.r_bytes),
            served: g(&self.served),
            error_replies: g(&self.error_replies),
            sessions: g(&self.sessions),
            backend_failures: g(&self.backend_failures),
        }
    }
}

/// Where a board stands in the supervisor's eyes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum BoardState {
    /// Seen, but not ours to serve (no backend, not allowed); not claimed.
    Ignored { reason: String },
    /// A worker owns the board.
    Running,
    /// The last worker failed; the next starts after the delay.
    Backoff { retry_in_ms: u64 },
}

/// One board as `usb9pfsd status` will show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoardStatus {
    pub busaddr: String,
    /// bInterfaceNumber of this usb9pfs interface.
    pub interface: u8,
    pub port_path: String,
    pub id: String,
    pub serial: Option<String>,
    pub backend: Option<String>,
    #[serde(flatten)]
    pub state: BoardState,
    /// Workers started for this board since it appeared.
    pub starts: u64,
    pub counters: CounterSnapshot,
    pub last_error: Option<String>,
}

/// Requests taken from a board whose reply has not been handed back yet, over
/// all boards. At shutdown the daemon breaks every server connection (so
/// pending requests are answered with EIO) and waits here, bounded, for those
/// replies to reach their boards before the process exits — a board left
/// without a reply would wait forever.
pub struct InFlight {
    count: std::sync::Mutex<usize>,
    idle: std::sync::Condvar,
}

/// The process-wide in-flight count.
pub static IN_FLIGHT: InFlight = InFlight { count: std::sync::Mutex::new(0), idle: std::sync::Condvar::new() };

/// One request in flight; dropping it marks the reply delivered (or given up).
pub struct Pending<'a>(&'a InFlight);

impl InFlight {
    pub fn enter(&self) -> Pending<'_> {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        Pending(self)
    }

    /// Waits until no request is in flight or `limit` passes; true if idle.
    pub fn wait_idle(&self, limit: std::time::Duration) -> bool {
        let guard = self.count.lock().unwrap_or_else(|p| p.into_inner());
        match self.idle.wait_timeout_while(guard, limit, |n| *n > 0) {
            Ok((n, _)) => *n == 0,
            Err(p) => *p.into_inner().0 == 0,
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let mut n = self.0.count.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.0.idle.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn waits_for_pending_replies() {
        let f = InFlight { count: std::sync::Mutex::new(0), idle: std::sync::Condvar::new() };
        assert!(f.wait_idle(Duration::ZERO));
        let p = f.enter();
        assert!(!f.wait_idle(Duration::from_millis(1)));
        std::thread::scope(|s| {
            s.spawn(move || drop(p));
            assert!(f.wait_idle(Duration::from_secs(20)));
        });
    }
}
