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
use crate::daemon::status::BoardState;
use crate::worker::HandedSession;

type Jobs = Arc<Mutex<Vec<Job>>>;

#[derive(Default)]
struct Recorder {
    jobs: Jobs,
    fail: Arc<Mutex<bool>>,
    /// Devices sysfs no longer shows (unplugged before udev said so).
    off_bus: Arc<Mutex<BTreeSet<BusAddr>>>,
}

impl Spawn for Recorder {
    fn spawn(&mut self, job: Job) -> Result<(), String> {
        if *self.fail.lock().expect("lock") {
            return Err("no threads left".into());
        }
        self.jobs.lock().expect("lock").push(job);
        Ok(())
    }
    fn on_bus(&self, info: &BoardInfo) -> bool {
        !self.off_bus.lock().expect("lock").contains(&info.busaddr)
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
    off_bus: Arc<Mutex<BTreeSet<BusAddr>>>,
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
    let off_bus = Arc::default();
    let notes = Notes::default();
    let sup = Supervisor::new(
        config,
        Recorder { jobs: jobs.clone(), fail: fail_spawn.clone(), off_bus: Arc::clone(&off_bus) },
        Box::new(notes.clone()),
        tx.clone(),
    );
    tokio::spawn(sup.run(rx));
    Rig { tx, jobs, fail_spawn, off_bus, notes }
}

fn gadget(serial: &str, bus: u8, addr: u8) -> BoardInfo {
    BoardInfo::example(Some(serial), bus, addr)
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
        self.status().await.into_iter().find(|b| b.board.busaddr == busaddr)
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
        let (a, b) = (Arc::as_ptr(&jobs[0].board_backend) as *const (), Arc::as_ptr(&jobs[1].board_backend) as *const ());
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
    r.jobs.lock().expect("lock")[1].counters.served.fetch_add(3, Ordering::Relaxed);
    r.end(1, End::Failed("two".into())).await;
    assert_eq!(state(&r.board("001-002").await), BoardState::Backoff { retry_in_ms: 500 });
}

#[tokio::test(start_paused = true)]
async fn a_handshake_alone_does_not_reset_the_restart_backoff() {
    let r = rig(CONFIG);
    r.send(HotplugEvent::Present(gadget("A", 1, 2)));
    r.end(0, End::Failed("one".into())).await;
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(state(&r.board("001-002").await), BoardState::Idle);
    let _ = r.status().await;
    // Tversion/Rversion, then the board broke the protocol again.
    let c = r.jobs.lock().expect("lock")[1].counters.clone();
    c.r_messages.fetch_add(1, Ordering::Relaxed);
    c.sessions.fetch_add(1, Ordering::Relaxed);
    r.end(1, End::Failed("two".into())).await;
    assert_eq!(state(&r.board("001-002").await), BoardState::Backoff { retry_in_ms: 1000 });
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
async fn an_unplug_reported_late_is_a_removal_not_a_restart_with_a_warning() {
    let out = captured_log();
    let r = rig("[defaults]\nbackend = \"127.0.0.1:1\"\n");
    r.send(HotplugEvent::Present(gadget("late-removal", 1, 2)));
    r.send(HotplugEvent::Present(gadget("late-removal-kept", 1, 3)));
    // Both workers fail; only 001-002 has left the bus (udev has not said so).
    r.end(0, End::Failed("USB error: transfer ended with EPROTO".into())).await;
    r.end(1, End::Failed("USB error: transfer ended with EPROTO".into())).await;
    r.off_bus.lock().expect("lock").insert(BusAddr { bus: 1, addr: 2 });
    tokio::time::advance(FIRST_RESTART).await;
    let boards = r.status().await;
    assert_eq!(boards.iter().map(|b| b.board.busaddr.as_str()).collect::<Vec<_>>(), ["001-003"], "the unplugged board is forgotten");
    assert_eq!(r.spawned(), 3, "only the board still on the bus restarted");
    // udev's removal, late, changes nothing.
    r.send(HotplugEvent::Gone(BusAddr { bus: 1, addr: 2 }));
    assert_eq!(r.status().await.len(), 1);
    let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf8");
    let warned = |serial: &str| text.lines().any(|l| l.contains("WARN") && l.contains(&format!("serial={serial} ")));
    assert!(!warned("late-removal"), "no warning for an unplug: {text}");
    assert!(warned("late-removal-kept"), "a board still there that failed is a warning: {text}");
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
pub(crate) struct Captured(pub(crate) Arc<Mutex<Vec<u8>>>);

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
pub(crate) fn captured_log() -> Captured {
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
    let sup = Supervisor::new(config, Recorder { jobs: jobs.clone(), ..Default::default() }, Box::new(Silent), tx.clone());
    tx.send(Input::Hotplug(HotplugEvent::Present(gadget("A", 1, 2)))).expect("send");
    tx.send(Input::Shutdown).expect("send");
    sup.run(rx).await;
    assert_eq!(jobs.lock().expect("lock").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn each_usb9pfs_interface_is_a_board_and_removal_stops_them_all() {
    let r = rig(CONFIG);
    let with_interface = |serial: &str, bus: u8, addr: u8, interface: u8| BoardInfo { interface, ..gadget(serial, bus, addr) };
    r.send(HotplugEvent::Present(with_interface("A", 1, 2, 2)));
    r.send(HotplugEvent::Present(with_interface("A", 1, 2, 10)));
    r.send(HotplugEvent::Present(with_interface("B", 2, 3, 0)));
    let s = r.status().await;
    let listed: Vec<_> = s.iter().map(|b| (b.board.busaddr.as_str(), b.board.interface, b.state.clone())).collect();
    assert_eq!(listed, vec![("001-002", 2, BoardState::Idle), ("001-002", 10, BoardState::Idle), ("002-003", 0, BoardState::Idle)]);
    assert_eq!(r.spawned(), 3, "one worker per interface");
    // One interface's failure leaves its sibling alone.
    r.end(1, End::Failed("interface 10 broke".into())).await;
    let s = r.status().await;
    assert_eq!(s[0].state, BoardState::Idle);
    assert!(matches!(s[1].state, BoardState::Backoff { .. }));
    // Unplugging the device stops every worker of it, and only those.
    let stops: Vec<_> = r.jobs.lock().expect("lock").iter().map(|j| j.stop.clone()).collect();
    r.send(HotplugEvent::Gone(BusAddr { bus: 1, addr: 2 }));
    let s = r.status().await;
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].board.busaddr, "002-003");
    assert!(stops[0].requested(), "the running worker of interface 2 is asked to stop");
    assert!(!stops[2].requested(), "the other device's worker is untouched");
    // The orphan's last report is recognised and changes nothing.
    r.end(0, End::Gone).await;
    assert_eq!(r.status().await.len(), 1);
    // No restart ever comes for the removed interfaces.
    tokio::time::advance(MAX_RESTART * 2).await;
    assert_eq!(r.spawned(), 3);
}

fn handed(live: bool) -> HandedSession {
    let limits = Limits { max_frame: 1 << 20, board_buflen: 16384, request_timeout: None, recover_window: std::time::Duration::ZERO };
    let mut session = crate::ninep::forward::Session::new(limits);
    session.live = live;
    HandedSession { node: None, session }
}

impl Rig {
    fn job_count(&self) -> usize {
        self.jobs.lock().expect("lock").len()
    }

    fn tell(&self, i: usize, event: WorkerEvent) {
        let reporter = self.jobs.lock().expect("lock")[i].reporter.clone();
        reporter.send(event);
    }

    fn took_over(&self, i: usize) -> bool {
        self.jobs.lock().expect("lock")[i].handed.is_some()
    }

    fn hand_over(&self) -> oneshot::Receiver<Result<handover::HandOver, String>> {
        self.hand_over_in(handover::Mode::AllOrNothing)
    }

    fn hand_over_in(&self, mode: handover::Mode) -> oneshot::Receiver<Result<handover::HandOver, String>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::HandOver(reply, mode)).expect("supervisor alive");
        rx
    }

    /// Worker `i` stopped at a message boundary, handing back a live session.
    fn stopped_at_boundary(&self, i: usize) {
        self.tell(i, WorkerEvent::Handed(handed(true)));
        self.tell(i, WorkerEvent::Ended(End::Stopped));
    }

    /// Boards A (001-002) and B (002-003) present and their workers started.
    async fn two_boards(&self) {
        self.send(HotplugEvent::Present(gadget("A", 1, 2)));
        self.send(HotplugEvent::Present(gadget("B", 2, 3)));
        let _ = self.status().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_hand_over_stops_every_served_board_at_a_boundary_and_gives_back_their_sessions() {
    let r = rig(CONFIG);
    r.send(HotplugEvent::Present(gadget("A", 1, 2)));
    r.send(HotplugEvent::Present(gadget("B", 2, 3)));
    r.send(HotplugEvent::Present(gadget("stranger", 3, 4)));
    let _ = r.status().await;
    let answer = r.hand_over();
    let _ = r.status().await;
    let stops: Vec<_> = r.jobs.lock().expect("lock").iter().map(|j| j.stop.clone()).collect();
    assert!(stops.iter().all(|s| s.requested()), "both served boards are asked to stop");
    for i in 0..2 {
        r.stopped_at_boundary(i);
    }
    let handed = answer.await.expect("answer").expect("handed over").boards;
    let keys: Vec<String> = handed.iter().map(|h| h.info.key().to_string()).collect();
    assert_eq!(keys, vec!["001-002#0", "002-003#0"]);
    assert_eq!(handed[0].backend.as_deref(), Some("127.0.0.1:5640"));
    assert!(handed.iter().all(|h| h.handed.session.live));
    // Handed over boards are never restarted here.
    tokio::time::advance(MAX_RESTART * 2).await;
    assert_eq!(r.job_count(), 2);
    // The successor could not start: every board is served here again,
    // with its own session.
    r.tx.send(Input::Resume(handed)).expect("alive");
    let _ = r.status().await;
    assert_eq!(r.job_count(), 4);
    assert!(r.took_over(2) && r.took_over(3));
}

#[tokio::test(start_paused = true)]
async fn a_board_busy_past_the_deadline_calls_the_hand_over_off_and_nothing_is_lost() {
    let r = rig(CONFIG);
    r.two_boards().await;
    let answer = r.hand_over();
    let _ = r.status().await;
    // A stops; B's request waits for its server past the deadline.
    r.stopped_at_boundary(0);
    let _ = r.status().await;
    tokio::time::advance(handover::HANDOVER_WAIT).await;
    let why = answer.await.expect("answer").expect_err("called off");
    assert!(why.contains("002-003#0"), "{why}");
    // A carries on here at once with its session.
    let _ = r.status().await;
    assert_eq!(r.job_count(), 3);
    assert!(r.took_over(2));
    // B stops when its reply came: it carries on here too.
    r.stopped_at_boundary(1);
    let _ = r.status().await;
    assert_eq!(r.job_count(), 4);
    assert!(r.took_over(3));
    // A second hand-over while one runs is refused, not queued.
    let first = r.hand_over();
    let second = r.hand_over();
    assert!(second.await.expect("answer").is_err());
    drop(first);
}

#[tokio::test(start_paused = true)]
async fn handed_over_sessions_are_taken_over_by_present_mapped_boards_only() {
    let config = Config::parse(CONFIG, Path::new("t.toml")).expect("config");
    let (tx, rx) = mpsc::unbounded_channel();
    let jobs = Jobs::default();
    let key = |bus, addr| BoardKey { busaddr: BusAddr { bus, addr }, interface: 0 };
    let sessions = [(key(1, 2), handed(true)), (key(2, 3), handed(true)), (key(3, 4), handed(false))].into_iter().collect();
    let sup = Supervisor::new(config, Recorder { jobs: jobs.clone(), ..Default::default() }, Box::new(Silent), tx.clone())
        .with_handed_over(sessions);
    tokio::spawn(sup.run(rx));
    let send = |ev| tx.send(Input::Hotplug(ev)).expect("alive");
    send(HotplugEvent::Present(gadget("A", 1, 2))); // mapped: takes it over
    send(HotplugEvent::Present(gadget("stranger", 2, 3))); // unmapped now: released
    send(HotplugEvent::ColdplugDone); // 3-4 never showed up: closed
    let (reply, rx) = oneshot::channel();
    tx.send(Input::Status(reply)).expect("alive");
    let _ = rx.await;
    let jobs = jobs.lock().expect("lock");
    assert_eq!(jobs.len(), 1);
    assert!(jobs[0].handed.as_ref().is_some_and(|c| c.session.live));
}

#[tokio::test(start_paused = true)]
async fn a_rescan_after_lost_udev_events_forgets_boards_that_went_meanwhile() {
    let r = rig(CONFIG);
    r.two_boards().await;
    let stops: Vec<_> = r.jobs.lock().expect("lock").iter().map(|j| j.stop.clone()).collect();
    // B's removal event was lost in an overflow; the rescan finds only A.
    r.send(HotplugEvent::Rescanned(vec![gadget("A", 1, 2).key()]));
    r.send(HotplugEvent::Present(gadget("A", 1, 2)));
    let s = r.status().await;
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].board.busaddr, "001-002");
    assert!(stops[1].requested() && !stops[0].requested());
    assert_eq!(r.spawned(), 2, "A keeps its worker");
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
    let refused = r.job(1, |j| j.board_backend.connect()).err().expect("nothing listens on 5651");
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
    r.job(0, |j| j.counters.set_activity(crate::daemon::status::Activity::Connecting));
    assert_eq!(state(&r.board("001-002").await), BoardState::Connecting);
    r.job(0, |j| {
        j.counters.set_activity(crate::daemon::status::Activity::Forwarding);
        j.counters.session_began();
    });
    let b = r.board("001-002").await.expect("listed");
    assert_eq!(b.state, BoardState::Forwarding);
    assert!(b.session_started_at.is_some());
    let report = r.report().await;
    assert_eq!(report.daemon.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(report.daemon.config_path, None);
}

#[tokio::test(start_paused = true)]
async fn a_released_board_gives_up_its_session_and_a_remapped_one_keeps_it() {
    let r = rig(CONFIG);
    r.two_boards().await;
    // Both unmapped: their workers are asked to stop at a boundary.
    r.reload("").await.expect("applied");
    let stops: Vec<_> = r.jobs.lock().expect("lock").iter().map(|j| j.stop.clone()).collect();
    assert!(stops[0].requested() && stops[1].requested());
    // A stops: its handed-back session is dropped (interface and server
    // connection closed), and no worker takes it up again.
    r.stopped_at_boundary(0);
    let _ = r.status().await;
    assert!(matches!(state(&r.board("001-002").await), BoardState::Ignored { .. }));
    assert_eq!(r.job_count(), 2);
    // B is mapped again before it reached its boundary: it carries on with
    // its own session, not a fresh one.
    r.reload("[[board]]\nserial = \"B\"\nbackend = \"127.0.0.1:5641\"\n").await.expect("applied");
    r.stopped_at_boundary(1);
    let _ = r.status().await;
    assert_eq!(r.job_count(), 3);
    assert!(r.took_over(2), "B's new worker takes over the session its old one handed back");
    assert_eq!(r.board("002-003").await.map(|b| b.state), Some(BoardState::Idle));
}

#[tokio::test(start_paused = true)]
async fn a_board_unplugged_during_a_hand_over_does_not_call_it_off() {
    let r = rig(CONFIG);
    r.two_boards().await;
    let answer = r.hand_over();
    let _ = r.status().await;
    r.stopped_at_boundary(0);
    // B goes away before it reached its boundary.
    r.send(HotplugEvent::Gone(BusAddr { bus: 2, addr: 3 }));
    let handed = answer.await.expect("answer").expect("handed over without waiting for the deadline").boards;
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0].info.key().to_string(), "001-002#0");
}

#[tokio::test(start_paused = true)]
async fn running_workers_waits_are_nudged_periodically_never_stopped() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let r = rig(CONFIG);
    r.send(HotplugEvent::Present(gadget("A", 1, 2)));
    let _ = r.status().await;
    let stop = r.jobs.lock().expect("lock")[0].stop.clone();
    let nudges = Arc::new(AtomicUsize::new(0));
    let n = nudges.clone();
    stop.set_canceller(Some(Box::new(move || {
        n.fetch_add(1, Ordering::SeqCst);
    })));
    // The worker waits at a message boundary.
    stop.arm(true);
    tokio::time::advance(crate::usb::pipe::NUDGE_EVERY + Duration::from_millis(1)).await;
    let _ = r.status().await;
    assert_eq!(nudges.load(Ordering::SeqCst), 1);
    tokio::time::advance(crate::usb::pipe::NUDGE_EVERY).await;
    let _ = r.status().await;
    assert_eq!(nudges.load(Ordering::SeqCst), 2);
    assert!(!stop.requested(), "a nudge never stops a worker");
    assert_eq!(r.job_count(), 1, "and never restarts one");
}

// --- Hand-over: nothing starts while one is under way (review finding 5),
// a reload cannot strand a board (finding 6), and a stop keeps whoever is
// ready (finding 2).

#[tokio::test(start_paused = true)]
async fn no_worker_starts_during_a_hand_over_and_the_deferred_start_when_it_is_given_back() {
    let r = rig(CONFIG);
    r.two_boards().await;
    // A fails and waits for its restart; the hand-over begins meanwhile.
    r.end(0, End::Failed("USB error".into())).await;
    let answer = r.hand_over();
    let _ = r.status().await;
    // A's backoff ends and board C is plugged in during the hand-over:
    // neither gets a worker (exec would cut it off mid-request).
    tokio::time::advance(handover::HANDOVER_WAIT / 2).await;
    r.send(HotplugEvent::Present(gadget("A2", 3, 4)));
    let _ = r.status().await;
    assert_eq!(r.job_count(), 2, "no worker started during the hand-over");
    r.stopped_at_boundary(1);
    let handed = answer.await.expect("answer").expect("handed over").boards;
    assert_eq!(handed.len(), 1, "only B was running");
    tokio::time::advance(MAX_RESTART).await;
    assert_eq!(r.job_count(), 2, "nor after it completed, before the exec");
    // The exec failed: B carries on with its session; A and C start now.
    r.tx.send(Input::Resume(handed)).expect("alive");
    let s = r.status().await;
    assert_eq!(r.job_count(), 5);
    let started: Vec<String> = (2..5).map(|i| r.job(i, |j| j.info.key().to_string())).collect();
    assert!(started.contains(&"001-002#0".to_string()) && started.contains(&"003-004#0".to_string()), "{started:?}");
    assert!(s.iter().all(|b| b.state == BoardState::Idle), "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn a_hand_over_called_off_starts_what_was_deferred() {
    let r = rig(CONFIG);
    r.two_boards().await;
    let answer = r.hand_over();
    let _ = r.status().await;
    r.send(HotplugEvent::Present(gadget("A2", 3, 4)));
    let _ = r.status().await;
    assert_eq!(r.job_count(), 2);
    // Nobody reaches a boundary: called off at the deadline.
    tokio::time::advance(handover::HANDOVER_WAIT).await;
    assert!(answer.await.expect("answer").is_err());
    let _ = r.status().await;
    assert_eq!(r.job_count(), 3, "the board plugged in meanwhile is served now");
    assert_eq!(r.job(2, |j| j.info.key().to_string()), "003-004#0");
}

#[tokio::test(start_paused = true)]
async fn a_reload_during_a_hand_over_leaves_every_board_handed_over_or_served() {
    let r = rig(CONFIG);
    r.two_boards().await;
    let answer = r.hand_over();
    let _ = r.status().await;
    // A reload that unmaps both while they are being stopped.
    let reload = r.reload("").await;
    r.stopped_at_boundary(0);
    let _ = r.status().await;
    // B is busy past the deadline: the hand-over is called off.
    tokio::time::advance(handover::HANDOVER_WAIT).await;
    assert!(answer.await.expect("answer").is_err());
    r.stopped_at_boundary(1);
    let s = r.status().await;
    // Each board is served here again, with its own session...
    assert_eq!(r.job_count(), 4, "{s:?} / {reload:?}");
    assert!(r.took_over(2) && r.took_over(3));
    // ...because the reload was refused, not half applied.
    let err = reload.expect_err("refused during the hand-over");
    assert!(err.contains("hand-over"), "{err}");
    assert!(s.iter().all(|b| b.backend.is_some()), "{s:?}");
    // Once it is over, the same reload applies as usual.
    r.reload("").await.expect("applied");
}

#[tokio::test(start_paused = true)]
async fn a_board_released_before_a_failed_exec_is_let_go_not_stranded() {
    let r = rig(CONFIG);
    r.two_boards().await;
    // A reload unmaps A; A's worker is asked to stop (release pending).
    r.reload("[[board]]\nserial = \"B\"\nbackend = \"127.0.0.1:5641\"\n").await.expect("applied");
    let answer = r.hand_over();
    let _ = r.status().await;
    r.stopped_at_boundary(0);
    r.stopped_at_boundary(1);
    let handed = answer.await.expect("answer").expect("handed over").boards;
    assert_eq!(handed.len(), 2, "A stopped at a boundary too: it crosses, the successor's config decides");
    // The exec failed: B carries on; A, unmapped, is let go.
    r.tx.send(Input::Resume(handed)).expect("alive");
    let s = r.status().await;
    assert!(matches!(&s[0].state, BoardState::Ignored { .. }), "{:?}", s[0].state);
    assert_eq!(s[1].state, BoardState::Idle);
    assert_eq!(r.job_count(), 3);
    assert!(r.took_over(2));
}

#[tokio::test(start_paused = true)]
async fn a_stop_hands_over_every_board_ready_in_time_and_leaves_only_the_busy_one_to_eio() {
    let r = rig(CONFIG);
    r.two_boards().await;
    let answer = r.hand_over_in(handover::Mode::Ready);
    let _ = r.status().await;
    r.stopped_at_boundary(0);
    let _ = r.status().await;
    // B's request waits for its server past the deadline.
    tokio::time::advance(handover::HANDOVER_WAIT).await;
    let handed = answer.await.expect("answer").expect("the ready boards are handed over");
    let keys: Vec<String> = handed.boards.iter().map(|b| b.info.key().to_string()).collect();
    assert_eq!(keys, ["001-002#0"]);
    assert_eq!(handed.busy.iter().map(|k| k.to_string()).collect::<Vec<_>>(), ["002-003#0"]);
    // A is not served here again (its session now belongs to the successor).
    let _ = r.status().await;
    assert_eq!(r.job_count(), 2);
    // The shutdown breaks only B's server connection (its request gets EIO).
    r.tx.send(Input::Shutdown).expect("alive");
    r.tx.closed().await;
    let b = r.job(1, |j| j.board_backend.connect()).err().expect("stopped");
    assert!(b.message.contains("letting go"), "{}", b.message);
    let a = r.job(0, |j| j.board_backend.connect()).err().map(|e| e.message).unwrap_or_default();
    assert!(!a.contains("letting go"), "A's connection belongs to the successor: {a}");
}

#[tokio::test(start_paused = true)]
async fn a_successor_says_which_boards_kept_their_sessions_and_which_lost_theirs() {
    let config = Config::parse(CONFIG, Path::new("t.toml")).expect("config");
    let (tx, rx) = mpsc::unbounded_channel();
    let jobs = Jobs::default();
    let key = |bus, addr| BoardKey { busaddr: BusAddr { bus, addr }, interface: 0 };
    let sup = Supervisor::new(config, Recorder { jobs: jobs.clone(), ..Default::default() }, Box::new(Silent), tx.clone())
        .with_handed_over([(key(1, 2), handed(true))].into_iter().collect())
        .with_lost([key(2, 3)]);
    tokio::spawn(sup.run(rx));
    let send = |ev| tx.send(Input::Hotplug(ev)).expect("alive");
    send(HotplugEvent::Present(gadget("A", 1, 2)));
    send(HotplugEvent::Present(gadget("B", 2, 3)));
    let (reply, rx) = oneshot::channel();
    tx.send(Input::Status(reply)).expect("alive");
    let _ = rx.await;
    // A's worker carries on with the session (status sees it live).
    let a = jobs.lock().expect("lock")[0].counters.clone();
    a.session_resumed(1_764_115_200_000);
    let (reply, rx) = oneshot::channel();
    tx.send(Input::Status(reply)).expect("alive");
    let s = rx.await.expect("status").boards;
    assert!(s[0].session_handed_over, "{:?}", s[0]);
    assert!(s[0].last_error.is_none());
    assert!(!s[1].session_handed_over);
    let why = s[1].last_error.as_deref().unwrap_or_default();
    assert!(why.contains("previous usb9pfsd stopped") && why.contains("EIO"), "{why}");
    // A new mount on A is a new session: no longer the handed-over one.
    a.sessions.fetch_add(1, Ordering::Relaxed);
    let (reply, rx) = oneshot::channel();
    tx.send(Input::Status(reply)).expect("alive");
    assert!(!rx.await.expect("status").boards[0].session_handed_over);
}

#[tokio::test(start_paused = true)]
async fn a_handed_over_session_is_bounded_by_the_max_frame_in_force_and_kept_only_by_its_own_board() {
    let text = format!("[daemon]\nmax_frame = 65536\n{CONFIG}");
    let config = Config::parse(&text, Path::new("t.toml")).expect("config");
    let (tx, rx) = mpsc::unbounded_channel();
    let jobs = Jobs::default();
    let key = |bus, addr| BoardKey { busaddr: BusAddr { bus, addr }, interface: 0 };
    let serials = [(key(1, 2), Some("A".to_string())), (key(2, 3), Some("someone-else".to_string()))].into_iter().collect();
    let sup = Supervisor::new(config, Recorder { jobs: jobs.clone(), ..Default::default() }, Box::new(Silent), tx.clone())
        .with_handed_over([(key(1, 2), handed(true)), (key(2, 3), handed(true))].into_iter().collect())
        .with_handed_over_serials(serials);
    tokio::spawn(sup.run(rx));
    tx.send(Input::Hotplug(HotplugEvent::Present(gadget("A", 1, 2)))).expect("alive");
    // A different board (B) now sits at the address the session was for.
    tx.send(Input::Hotplug(HotplugEvent::Present(gadget("B", 2, 3)))).expect("alive");
    let (reply, rx) = oneshot::channel();
    tx.send(Input::Status(reply)).expect("alive");
    let _ = rx.await;
    let jobs = jobs.lock().expect("lock");
    assert_eq!(jobs.len(), 2);
    let a = jobs[0].handed.as_ref().expect("A carries on with its session");
    assert_eq!(a.session.ceiling, 65536, "the handed-over ceiling (1 MiB) is bounded by the max_frame in force");
    assert!(jobs[1].handed.is_none(), "B does not get the session recorded for another serial at its address");
}

// --- usb9pfsd serve / unserve: runtime mappings over the config. ---

impl Rig {
    async fn serve_with(&self, board: &str, spec: crate::config::serve::ServeSpec) -> Result<ServeAnswer, String> {
        let (reply, rx) = oneshot::channel();
        let serve = Serve { board: board.parse().expect("board"), spec, by_uid: 1000, since: "2026-12-06T00:00:00Z".into() };
        self.tx.send(Input::Serve(serve, reply)).expect("supervisor alive");
        rx.await.expect("serve reply")
    }

    async fn unserve(&self, board: &str) -> Result<ServeAnswer, String> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::Unserve(board.parse().expect("board"), reply)).expect("supervisor alive");
        rx.await.expect("unserve reply")
    }
}

fn export(dir: &str) -> crate::config::serve::ServeSpec {
    crate::config::serve::ServeSpec { export: Some(dir.into()), ..Default::default() }
}

#[tokio::test(start_paused = true)]
async fn serve_maps_a_board_over_the_config_until_unserved_and_survives_a_reload() {
    let r = rig(CONFIG);
    r.send(HotplugEvent::Present(gadget("A", 1, 2)));
    r.send(HotplugEvent::Present(gadget("stranger", 2, 2)));
    r.send(HotplugEvent::ColdplugDone);
    let _ = r.status().await;
    assert_eq!(r.spawned(), 1, "the stranger is not in the config");

    // A board nobody mapped gets a worker, serving the directory.
    let answer = r.serve_with("stranger", export("/srv/rootfs")).await.expect("served");
    assert_eq!(answer.summary.started, 1);
    assert_eq!(answer.boards, vec!["stranger at 002-002#0".to_string()]);
    assert_eq!(r.spawned(), 2);
    let s = r.board("002-002").await.expect("listed");
    assert_eq!(s.backend.as_deref(), Some("managed:/srv/rootfs"));
    assert_eq!(s.confine.as_ref().and_then(|c| c.export.as_deref()), Some("/srv/rootfs"));
    let report = r.report().await;
    assert_eq!(report.daemon.serves.len(), 1);
    assert_eq!((report.daemon.serves[0].board.to_string(), report.daemon.serves[0].by_uid), ("stranger".into(), 1000));

    // A mapped board moves at its next mount; its live session is not cut.
    let answer = r
        .serve_with(
            "001-002#0",
            crate::config::serve::ServeSpec { backend: Some("10.0.0.9:564".parse().expect("addr")), ..Default::default() },
        )
        .await
        .expect("served");
    assert_eq!(answer.summary.swapped, 1);
    let a = r.board("001-002").await.expect("listed");
    assert_eq!((a.backend_pending.as_deref(), a.starts), (Some("10.0.0.9:564"), 1), "same worker, new server pending");
    assert!(!r.job(0, |j| j.stop.requested()));

    // A reload of the file keeps both serves.
    let summary = r.reload(CONFIG).await.expect("reloaded");
    assert_eq!(summary.swapped + summary.started + summary.released, 0, "{summary:?}");
    assert_eq!(r.report().await.daemon.serves.len(), 2);
    assert_eq!(r.board("002-002").await.expect("listed").backend.as_deref(), Some("managed:/srv/rootfs"));

    // Unserve: the config decides again — the stranger is let go, A goes back.
    let answer = r.unserve("stranger").await.expect("unserved");
    assert_eq!(answer.summary.released, 1);
    assert!(r.job(1, |j| j.stop.requested()), "the stranger's worker stops at a boundary");
    r.unserve("001-002#0").await.expect("unserved");
    let a = r.board("001-002").await.expect("listed");
    assert_eq!((a.backend.as_deref(), a.backend_pending), (Some("127.0.0.1:5640"), None), "back on its own server, never having left it");
    let err = r.unserve("stranger").await.expect_err("nothing to undo");
    assert!(err.contains("no serve is set for stranger"), "{err}");
    assert!(r.report().await.daemon.serves.is_empty());
    // Refused: a serve with nothing to serve.
    assert!(r.serve_with("A", Default::default()).await.is_err());
}
