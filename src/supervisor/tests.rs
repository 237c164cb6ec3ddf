//! The supervisor's state machine driven by a fake event source (the input
//! channel) and a recording spawner. Time is tokio's paused clock: backoff is
//! checked by advancing it, and every check is a status query answered in
//! order after the inputs before it — no sleeps.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::board::usb_id;
use crate::status::BoardState;

type Jobs = Arc<Mutex<Vec<Job>>>;

struct Recorder {
    jobs: Jobs,
    fail: Arc<Mutex<bool>>,
}

impl Spawn for Recorder {
    fn spawn(&mut self, job: Job) -> Result<(), String> {
        if *self.fail.lock().expect("lock") {
            return Err("no threads left".into());
        }
        self.jobs.lock().expect("lock").push(job);
        Ok(())
    }
}

#[derive(Default, Clone)]
struct Notes(Arc<Mutex<Vec<String>>>);

impl Notify for Notes {
    fn ready(&mut self, served: usize) {
        self.0.lock().expect("lock").push(format!("ready {served}"));
    }
    fn status(&mut self, served: usize, total: usize) {
        self.0.lock().expect("lock").push(format!("status {served}/{total}"));
    }
    fn reloading(&mut self) {
        self.0.lock().expect("lock").push("reloading".into());
    }
}

struct Rig {
    tx: mpsc::UnboundedSender<Input>,
    jobs: Jobs,
    fail_spawn: Arc<Mutex<bool>>,
    notes: Notes,
}

const CONFIG: &str = r#"
[[board]]
serial = "A"
backend = "127.0.0.1:5640"
[[board]]
serial = "B"
backend = "127.0.0.1:5641"
[[board]]
serial = "A2"
backend = "127.0.0.1:5642"
"#;

fn rig(config: &str) -> Rig {
    let config = Config::parse(config, Path::new("t.toml")).expect("config");
    let (tx, rx) = mpsc::unbounded_channel();
    let jobs = Jobs::default();
    let fail_spawn = Arc::new(Mutex::new(false));
    let notes = Notes::default();
    let sup = Supervisor::new(
        config,
        Recorder { jobs: jobs.clone(), fail: fail_spawn.clone() },
        Box::new(notes.clone()),
        tx.clone(),
    );
    tokio::spawn(sup.run(rx));
    Rig { tx, jobs, fail_spawn, notes }
}

fn gadget(serial: &str, bus: u8, addr: u8) -> GadgetInfo {
    GadgetInfo {
        busaddr: BusAddr { bus, addr },
        bus,
        address: addr,
        port_path: format!("{bus}-1"),
        vid: 0x1d6b,
        pid: 0x0109,
        id: usb_id(0x1d6b, 0x0109),
        serial: Some(serial.into()),
        manufacturer: None,
        product: None,
        interface: 0,
    }
}

impl Rig {
    fn send(&self, ev: HotplugEvent) {
        self.tx.send(Input::Hotplug(ev)).expect("supervisor alive");
    }

    async fn status(&self) -> Vec<BoardStatus> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::Status(reply)).expect("supervisor alive");
        rx.await.expect("status").boards
    }

    async fn board(&self, busaddr: &str) -> Option<BoardStatus> {
        self.status().await.into_iter().find(|b| b.busaddr == busaddr)
    }

    fn spawned(&self) -> usize {
        self.jobs.lock().expect("lock").len()
    }

    /// Ends the i-th worker once the supervisor has caught up with every
    /// input sent before (the status round trip is the synchronisation).
    async fn end(&self, i: usize, end: End) {
        let _ = self.status().await;
        let reporter = self.jobs.lock().expect("lock")[i].reporter.clone();
        reporter.send(WorkerEvent::Ended(end));
        let _ = self.status().await;
    }
}

fn state(b: &Option<BoardStatus>) -> BoardState {
    b.as_ref().expect("board listed").state.clone()
}

#[tokio::test(start_paused = true)]
async fn coldplug_serves_known_boards_and_leaves_unknown_alone() {
    let r = rig(CONFIG);
    r.send(HotplugEvent::Present(gadget("A", 1, 2)));
    r.send(HotplugEvent::Present(gadget("stranger", 2, 2)));
    r.send(HotplugEvent::Present(gadget("A", 1, 2))); // bind after add: no second worker
    r.send(HotplugEvent::ColdplugDone);
    let s = r.status().await;
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].state, BoardState::Idle);
    assert_eq!(s[0].backend.as_deref(), Some("127.0.0.1:5640"));
    assert_eq!(s[0].starts, 1);
    assert!(matches!(&s[1].state, BoardState::Ignored { reason } if reason.contains("no backend")));
    assert_eq!(s[1].backend, None);
    assert_eq!(r.spawned(), 1, "the unknown board is not claimed");
    let notes = r.notes.0.lock().expect("lock").clone();
    assert!(notes.contains(&"ready 1".to_string()), "{notes:?}");
}

#[tokio::test(start_paused = true)]
async fn removal_forgets_the_board_and_a_reenumerated_board_gets_a_fresh_worker() {
    let r = rig(CONFIG);
    r.send(HotplugEvent::Present(gadget("A", 1, 2)));
    r.send(HotplugEvent::Gone(BusAddr { bus: 1, addr: 2 }));
    assert!(r.status().await.is_empty());
    // Same serial, new address: a reset or re-enumeration.
    r.send(HotplugEvent::Present(gadget("A", 1, 3)));
    assert_eq!(state(&r.board("001-003").await), BoardState::Idle);
    assert_eq!(r.spawned(), 2);
    {
        let jobs = r.jobs.lock().expect("lock");
        let (a, b) = (Arc::as_ptr(&jobs[0].backends) as *const (), Arc::as_ptr(&jobs[1].backends) as *const ());
        assert_ne!(a, b, "a fresh backend for the new enumeration");
    }
    // Reports from the worker of the removed enumeration change nothing.
    r.end(0, End::Failed("late".into())).await;
    assert_eq!(state(&r.board("001-003").await), BoardState::Idle);
}

#[tokio::test(start_paused = true)]
async fn failed_workers_restart_with_capped_exponential_backoff() {
    let r = rig(CONFIG);
    r.send(HotplugEvent::Present(gadget("A", 1, 2)));
    let mut expected = Vec::new();
    let mut seen = Vec::new();
    for i in 0..8 {
        r.end(i, End::Failed(format!("failure {i}"))).await;
        let b = r.board("001-002").await.expect("listed");
        let BoardState::Backoff { retry_in_ms } = b.state else { panic!("{:?}", b.state) };
        assert_eq!(b.last_error.as_deref(), Some(format!("failure {i}").as_str()));
        seen.push(retry_in_ms);
        expected.push((500u64 << i).min(30_000));
        tokio::time::advance(Duration::from_millis(retry_in_ms - 1)).await;
        assert_eq!(r.spawned(), i + 1, "not restarted before the delay");
        tokio::time::advance(Duration::from_millis(1)).await;
        let b = r.board("001-002").await.expect("listed");
        assert_eq!(b.state, BoardState::Idle);
        assert_eq!(b.starts, i as u64 + 2);
    }
    assert_eq!(seen, expected);
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_served_starts_the_backoff_afresh() {
    let r = rig(CONFIG);
    r.send(HotplugEvent::Present(gadget("A", 1, 2)));
    r.end(0, End::Failed("one".into())).await;
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(state(&r.board("001-002").await), BoardState::Idle);
    let _ = r.status().await;
    r.jobs.lock().expect("lock")[1].counters.r_messages.fetch_add(3, Ordering::Relaxed);
    r.end(1, End::Failed("two".into())).await;
    assert_eq!(state(&r.board("001-002").await), BoardState::Backoff { retry_in_ms: 500 });
}

#[tokio::test(start_paused = true)]
async fn one_boards_trouble_never_touches_another() {
    let r = rig(CONFIG);
    r.send(HotplugEvent::Present(gadget("A", 1, 2)));
    r.send(HotplugEvent::Present(gadget("B", 2, 2)));
    r.end(0, End::Failed("USB error".into())).await;
    r.end(0, End::Gone).await;
    let s = r.status().await;
    assert!(matches!(s[0].state, BoardState::Backoff { .. }));
    assert_eq!((s[1].state.clone(), s[1].starts, s[1].last_error.clone()), (BoardState::Idle, 1, None));
}

#[tokio::test(start_paused = true)]
async fn removal_during_backoff_cancels_the_restart() {
    let r = rig(CONFIG);
    r.send(HotplugEvent::Present(gadget("A", 1, 2)));
    r.end(0, End::Gone).await;
    assert!(matches!(state(&r.board("001-002").await), BoardState::Backoff { .. }));
    r.send(HotplugEvent::Gone(BusAddr { bus: 1, addr: 2 }));
    assert!(r.status().await.is_empty());
    tokio::time::advance(Duration::from_secs(60)).await;
    assert!(r.status().await.is_empty());
    assert_eq!(r.spawned(), 1);
}

#[tokio::test(start_paused = true)]
async fn spawn_failure_is_a_failure_with_backoff() {
    let r = rig(CONFIG);
    *r.fail_spawn.lock().expect("lock") = true;
    r.send(HotplugEvent::Present(gadget("A", 1, 2)));
    let b = r.board("001-002").await.expect("listed");
    assert_eq!(b.state, BoardState::Backoff { retry_in_ms: 500 });
    assert_eq!(b.last_error.as_deref(), Some("no threads left"));
    *r.fail_spawn.lock().expect("lock") = false;
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(state(&r.board("001-002").await), BoardState::Idle);
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every test's log, captured by one process-wide subscriber (a per-test
/// scoped one races with tracing's per-callsite interest cache across the
/// test threads). Tests find their own lines by unique serials.
fn captured_log() -> Captured {
    static LOG: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in unit tests");
        out
    })
    .clone()
}

#[tokio::test(start_paused = true)]
async fn an_unknown_board_is_logged_once_across_replugs() {
    let out = captured_log();
    let r = rig(CONFIG);
    for addr in 2..6 {
        r.send(HotplugEvent::Present(gadget("stranger-once", 3, addr)));
        r.send(HotplugEvent::Present(gadget("stranger-once", 3, addr)));
        r.send(HotplugEvent::Gone(BusAddr { bus: 3, addr }));
    }
    r.send(HotplugEvent::Present(gadget("A2", 1, 2)));
    let _ = r.status().await;
    let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf8");
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("no backend") && l.contains("serial=stranger-once")).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("busaddr=003-002"), "{}", lines[0]);
    assert!(text.lines().any(|l| l.contains("board found") && l.contains("serial=A2")), "{text}");
}

#[tokio::test(start_paused = true)]
async fn allow_list_and_defaults_apply() {
    let r = rig("[daemon]\nallow_ids = [\"1d6b:0109\"]\n[defaults]\nbackend = \"127.0.0.1:1\"\n");
    let mut other = gadget("x", 1, 2);
    other.vid = 0x0525;
    other.id = usb_id(0x0525, 0x0109);
    r.send(HotplugEvent::Present(other));
    r.send(HotplugEvent::Present(gadget("y", 1, 3)));
    let s = r.status().await;
    assert!(matches!(&s[0].state, BoardState::Ignored { reason } if reason.contains("allow_ids")));
    assert_eq!(s[1].backend.as_deref(), Some("127.0.0.1:1"));
    assert_eq!(r.spawned(), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_returns() {
    let config = Config::parse(CONFIG, Path::new("t.toml")).expect("config");
    let (tx, rx) = mpsc::unbounded_channel();
    let jobs = Jobs::default();
    let sup = Supervisor::new(
        config,
        Recorder { jobs: jobs.clone(), fail: Arc::default() },
        Box::new(Silent),
        tx.clone(),
    );
    tx.send(Input::Hotplug(HotplugEvent::Present(gadget("A", 1, 2)))).expect("send");
    tx.send(Input::Shutdown).expect("send");
    sup.run(rx).await;
    assert_eq!(jobs.lock().expect("lock").len(), 1);
}

// --- Reload: the supervisor applies reload::plan's actions. ---

impl Rig {
    async fn reload(&self, text: &str) -> Result<reload::Summary, String> {
        let (reply, rx) = oneshot::channel();
        let config = Config::parse(text, Path::new("new.toml"));
        self.tx.send(Input::Reload(config, reply)).expect("supervisor alive");
        rx.await.expect("reload reply")
    }

    async fn report(&self) -> StatusReport {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::Status(reply)).expect("supervisor alive");
        rx.await.expect("status")
    }

    fn job<T>(&self, i: usize, f: impl FnOnce(&Job) -> T) -> T {
        f(&self.jobs.lock().expect("lock")[i])
    }
}

/// CONFIG with A unchanged, B moved to another server, A2 dropped and the
/// stranger newly listed.
const RELOADED: &str = r#"
[[board]]
serial = "A"
backend = "127.0.0.1:5640"
[[board]]
serial = "B"
backend = "127.0.0.1:5651"
[[board]]
serial = "stranger"
backend = "127.0.0.1:5643"
"#;

#[tokio::test(start_paused = true)]
async fn reload_touches_only_the_boards_whose_mapping_changed() {
    let r = rig(CONFIG);
    r.send(HotplugEvent::Present(gadget("A", 1, 2)));
    r.send(HotplugEvent::Present(gadget("B", 2, 2)));
    r.send(HotplugEvent::Present(gadget("A2", 3, 2)));
    r.send(HotplugEvent::Present(gadget("stranger", 4, 2)));
    r.send(HotplugEvent::ColdplugDone);
    let _ = r.status().await;
    assert_eq!(r.spawned(), 3);
    let generations: Vec<u64> = (0..3).map(|i| r.job(i, |j| j.reporter.generation)).collect();

    let summary = r.reload(RELOADED).await.expect("applied");
    assert_eq!(summary, reload::Summary { kept: 1, swapped: 1, started: 1, released: 1 });
    let s = r.status().await;
    let (a, b, a2, stranger) = (&s[0], &s[1], &s[2], &s[3]);

    // Unchanged: same worker, nothing pending.
    assert_eq!((a.state.clone(), a.starts, a.backend_pending.clone(), a.release_pending), (BoardState::Idle, 1, None, false));
    // Moved: same worker; the new server waits for the next session.
    assert_eq!((b.state.clone(), b.starts), (BoardState::Idle, 1));
    assert_eq!(b.backend.as_deref(), Some("127.0.0.1:5651"));
    assert_eq!(b.backend_pending.as_deref(), Some("127.0.0.1:5651"));
    // Dropped: its worker is asked to stop at a message boundary, nothing else.
    assert!(a2.release_pending);
    assert_eq!((a2.state.clone(), a2.backend.clone()), (BoardState::Idle, None));
    assert!(r.job(2, |j| j.stop.requested()), "the unmapped board's worker is asked to stop");
    assert!(!r.job(0, |j| j.stop.requested()) && !r.job(1, |j| j.stop.requested()));
    // Newly mapped: a worker of its own.
    assert_eq!((stranger.state.clone(), stranger.backend.as_deref()), (BoardState::Idle, Some("127.0.0.1:5643")));
    assert_eq!(r.spawned(), 4, "exactly one new worker: the stranger's");
    assert_eq!(r.job(3, |j| j.info.serial.clone()).as_deref(), Some("stranger"));
    let same: Vec<u64> = (0..3).map(|i| r.job(i, |j| j.reporter.generation)).collect();
    assert_eq!(same, generations);

    // B's next session (its next Tversion) goes to the new server.
    let refused = r.job(1, |j| j.backends.connect()).err().expect("nothing listens on 5651");
    assert!(refused.message.contains("127.0.0.1:5651"), "{}", refused.message);
    assert_eq!(r.board("002-002").await.expect("listed").backend_pending, None);

    // A2's worker stops; the board is left alone and never restarted.
    r.end(2, End::Stopped).await;
    let a2 = r.board("003-002").await.expect("listed");
    assert!(matches!(&a2.state, BoardState::Ignored { reason } if reason.contains("no backend")), "{:?}", a2.state);
    assert!(!a2.release_pending);
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(r.spawned(), 4);

    let notes = r.notes.0.lock().expect("lock").clone();
    let at = notes.iter().position(|n| n == "reloading").expect("RELOADING sent");
    assert_eq!(notes[at + 1], "ready 3", "{notes:?}");
}

#[tokio::test(start_paused = true)]
async fn an_invalid_config_keeps_the_old_one_in_force() {
    let r = rig(CONFIG);
    r.send(HotplugEvent::Present(gadget("A", 1, 2)));
    let err = r.reload("[[board]]\nserial = \"A\"\nbackend = \"nope\"\n").await.expect_err("invalid");
    assert!(err.starts_with("new.toml:3:11:"), "{err}");
    let report = r.report().await;
    assert!(err.ends_with("; the old config stays in force"), "{err}");
    let recorded = report.daemon.last_reload_error.expect("recorded for status");
    assert!(err.starts_with(&recorded), "{recorded} / {err}");
    assert!(report.daemon.last_reload_error_at.is_some());
    assert_eq!(report.boards[0].backend.as_deref(), Some("127.0.0.1:5640"));
    // A board plugged now is mapped by the config still in force.
    r.send(HotplugEvent::Present(gadget("B", 2, 2)));
    assert_eq!(r.board("002-002").await.expect("listed").backend.as_deref(), Some("127.0.0.1:5641"));
    assert_eq!(r.spawned(), 2);
    // A good reload clears the error.
    r.reload(CONFIG).await.expect("valid");
    assert_eq!(r.report().await.daemon.last_reload_error, None);
}

#[tokio::test(start_paused = true)]
async fn an_unserved_boards_reason_follows_the_config() {
    let r = rig(CONFIG);
    r.send(HotplugEvent::Present(gadget("stranger", 1, 2)));
    assert!(matches!(state(&r.board("001-002").await), BoardState::Ignored { reason } if reason.contains("no backend")));
    r.reload("[daemon]\nallow_ids = [\"0525:a4a0\"]\n").await.expect("applied");
    assert!(matches!(state(&r.board("001-002").await), BoardState::Ignored { reason } if reason.contains("allow_ids")));
    assert_eq!(r.spawned(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_unmapped_board_in_backoff_is_released_at_once() {
    let r = rig(CONFIG);
    r.send(HotplugEvent::Present(gadget("A", 1, 2)));
    r.end(0, End::Failed("USB error".into())).await;
    r.reload("").await.expect("applied");
    assert!(matches!(state(&r.board("001-002").await), BoardState::Ignored { .. }));
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(r.spawned(), 1, "no restart for a board nobody maps");
}

#[tokio::test(start_paused = true)]
async fn a_releasing_board_that_fails_or_is_remapped_ends_up_right() {
    let r = rig(CONFIG);
    r.send(HotplugEvent::Present(gadget("A", 1, 2)));
    r.send(HotplugEvent::Present(gadget("B", 2, 2)));
    r.reload("").await.expect("applied");
    // A's worker ends by failure while its release is pending: no restart.
    r.end(0, End::Failed("USB error".into())).await;
    assert!(matches!(state(&r.board("001-002").await), BoardState::Ignored { .. }));
    // B is mapped again before its worker stopped: the worker keeps
    // running; when it stops, a fresh one starts at once.
    r.reload(CONFIG).await.expect("applied");
    let b = r.board("002-002").await.expect("listed");
    assert_eq!((b.release_pending, b.state.clone(), r.spawned()), (false, BoardState::Idle, 3));
    assert_eq!(r.job(2, |j| j.info.serial.clone()).as_deref(), Some("A"), "A was mapped again too");
    r.end(1, End::Stopped).await;
    assert_eq!((state(&r.board("002-002").await), r.spawned()), (BoardState::Idle, 4));
}

#[tokio::test(start_paused = true)]
async fn status_follows_the_workers_activity_and_session() {
    let r = rig(CONFIG);
    r.send(HotplugEvent::Present(gadget("A", 1, 2)));
    let _ = r.status().await;
    r.job(0, |j| j.counters.set_activity(crate::status::Activity::Connecting));
    assert_eq!(state(&r.board("001-002").await), BoardState::Connecting);
    r.job(0, |j| {
        j.counters.set_activity(crate::status::Activity::Forwarding);
        j.counters.session_began();
    });
    let b = r.board("001-002").await.expect("listed");
    assert_eq!(b.state, BoardState::Forwarding);
    assert!(b.session_started_at.is_some());
    let report = r.report().await;
    assert_eq!(report.daemon.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(report.daemon.config_path, None);
}
