//! usb9pfsd's entry point: parse the command line, set up logging, and run
//! the chosen subcommand. Wiring only: the daemon's parts live in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use usb9pfsd::board::{BoardInfo, BoardKey};
use usb9pfsd::cli::{self, Cli, Command, Failure};
use usb9pfsd::config::{self, Config};
use usb9pfsd::daemon::status::IN_FLIGHT;
use usb9pfsd::daemon::supervisor::{Input, Notify, Silent, Spawn, Supervisor};
use usb9pfsd::daemon::{control, logging, notify, status, succession};
use usb9pfsd::probe;
use usb9pfsd::usb::discover::Sysfs;
use usb9pfsd::usb::hotplug;
use usb9pfsd::worker::{self, Job};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose);
    let selection = match cli.selection() {
        Ok(s) => s,
        // A bad command line exits 2, as clap's own errors do.
        Err(e) => Cli::command().error(clap::error::ErrorKind::ArgumentConflict, e).exit(),
    };
    let result: Result<(), Failure> = match cli.command {
        Command::Run { config: path, control_socket } => {
            // First, before any thread: what a predecessor handed over. It is
            // used (and the reexec requester answered) only once the config
            // has loaded; a config that does not load leaves it untaken.
            let passed = succession::Passed::take_at_start();
            match Config::load_checked(&path) {
                Err(e) => {
                    let kept = passed.refuse(&e.to_string());
                    Err(format!("{e}{kept}{}", if e.line == 0 { " (or pass --config PATH)" } else { "" }).into())
                }
                Ok((c, warnings)) => {
                    for w in &warnings {
                        tracing::warn!("{w}");
                    }
                    if c.test_waits.is_set() {
                        // For the VM rig only (config.rs: TestWaits).
                        usb9pfsd::usb::pipe::shorten_waits_for_tests(c.test_waits.partial_frame_wait, c.test_waits.nudge_every);
                        tracing::warn!(
                            "[daemon] test_partial_frame_wait / test_nudge_every are set: a board's unfinished message is given {} s and the workers are nudged every {} s (defaults {} s and {} s); these keys are for tests only",
                            usb9pfsd::usb::pipe::partial_frame_wait().as_secs(),
                            usb9pfsd::usb::pipe::nudge_every().as_secs(),
                            usb9pfsd::usb::pipe::PARTIAL_FRAME_WAIT.as_secs(),
                            usb9pfsd::usb::pipe::NUDGE_EVERY.as_secs()
                        );
                    }
                    let taken = passed.take_over();
                    // Reloads re-read this file; status shows it.
                    let path = std::env::current_dir().map(|d| d.join(&path)).unwrap_or(path);
                    let socket =
                        control_socket.or_else(|| c.control_socket.clone()).unwrap_or_else(|| PathBuf::from(control::DEFAULT_SOCKET));
                    serve(c, Box::new(notify::Systemd), Some(Control { config_path: path, socket }), taken).map_err(Failure::from)
                }
            }
        }
        Command::List { json, config } => list(json, config.as_deref()).map_err(Failure::from),
        Command::Forward { server, port, unix, buflen, request_timeout, .. } => {
            // `forward` re-executes on SIGUSR2 like `run`: take the sessions.
            let passed = succession::Passed::take_at_start();
            let Some(selection) = selection else { unreachable!("forward has a selection") };
            let config = cli::forward_backend(&server, port, unix.as_deref())
                .map(|b| cli::forward_config(b, &selection, buflen, request_timeout))
                .and_then(|c| check_single(&c).map(|()| c));
            match config {
                Ok(c) => serve(c, Box::new(Silent), None, passed.take_over()).map_err(Failure::from),
                Err(e) => {
                    let kept = passed.refuse(&e);
                    Err(Failure::usage(format!("{e}{kept}")))
                }
            }
        }
        Command::CheckConfig { path, probe, attach } => check_config(&path, probe.then_some(&attach)),
        Command::Probe { config, backend, export, squash_uid, json, attach } => {
            probe(&config, backend.as_deref(), export, squash_uid, json, &attach)
        }
        Command::Status { json, socket } => show_status(json, &socket),
        Command::Reload { socket } => reload(&socket),
        Command::Reexec { socket } => reexec(&socket),
        Command::Serve { board, backend, export, read_only, uid, gid, json, socket } => {
            serve_board(&socket, board, backend.as_deref(), export, read_only, uid, gid, json)
        }
        Command::Unserve { board, json, socket } => {
            let req = control::Request { board: Some(board), ..control::Request::new("unserve") };
            send_serve(&socket, &req, json)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            // stderr reaches the journal too when systemd runs us.
            if !f.message.is_empty() {
                eprintln!("usb9pfsd: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}

/// `usb9pfsd serve`: the arguments checked here (exit status 2), then asked.
#[allow(clippy::too_many_arguments)]
fn serve_board(
    socket: &Path,
    board: String,
    backend: Option<&str>,
    export: Option<String>,
    read_only: bool,
    uid: Option<u32>,
    gid: Option<u32>,
    json: bool,
) -> Result<(), Failure> {
    let usage = |m: String| Failure { code: 2, message: m };
    board.parse::<usb9pfsd::config::serve::BoardSel>().map_err(usage)?;
    let backend = backend.map(|b| config::parse_backend(b).map_err(|m| usage(format!("--backend: {m}")))).transpose()?;
    let spec = usb9pfsd::config::serve::ServeSpec { backend, export, read_only, uid, gid };
    spec.check().map_err(usage)?;
    let req = control::Request { board: Some(board), serve: Some(spec), ..control::Request::new("serve") };
    send_serve(socket, &req, json)
}

/// Sends a `serve` or `unserve` and says what it did.
fn send_serve(socket: &Path, req: &control::Request, json: bool) -> Result<(), Failure> {
    let r = ask_with(socket, req)?;
    if !r.ok {
        return Err(Failure::from(r.error.unwrap_or_else(|| format!("{} failed", req.command))));
    }
    let answer = r.served.unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&answer).map_err(|e| e.to_string())?);
        return Ok(());
    }
    let board = req.board.as_deref().unwrap_or("?");
    let present = if answer.boards.is_empty() { "no such board is plugged in now".to_string() } else { answer.boards.join(", ") };
    match &req.serve {
        Some(spec) => println!("{board}: serves {spec} from the board's next mount ({present}); a live session keeps what it began with"),
        None => println!("{board}: the config decides again from the board's next mount ({present})"),
    }
    Ok(())
}

/// Asks the running daemon; "not running" is exit status 3.
fn ask(socket: &Path, command: &str) -> Result<control::Response, Failure> {
    ask_with(socket, &control::Request::new(command))
}

fn ask_with(socket: &Path, req: &control::Request) -> Result<control::Response, Failure> {
    control::send(socket, req).map_err(|e| {
        if control::absent(socket) {
            Failure::not_running(format!(
                "usb9pfsd is not running (nothing listens on {}); udev starts it when a usb9pfs board appears, or: systemctl start usb9pfsd",
                socket.display()
            ))
        } else {
            Failure::from(e)
        }
    })
}

/// Workers on OS threads, each with its own libusb context (made when the
/// worker opens its board, so the daemon starts on a machine whose USB stack
/// appears later).
struct Threads;

impl Spawn for Threads {
    fn spawn(&mut self, job: Job) -> Result<(), String> {
        worker::spawn(job).map_err(|e| format!("cannot start a worker thread: {e}"))
    }

    fn on_bus(&self, info: &BoardInfo) -> bool {
        usb9pfsd::usb::discover::Sysfs::default().on_bus(info)
    }
}

/// What `run` has and `forward` lacks: a config file to re-read and a
/// control socket to answer on.
struct Control {
    config_path: PathBuf,
    socket: PathBuf,
}

/// Runs the supervisor, hotplug and the control socket until SIGTERM/SIGINT;
/// SIGHUP reloads the config; SIGUSR2 re-executes in place with every
/// board's session.
fn serve(mut config: Config, notify: Box<dyn Notify>, control: Option<Control>, taken: succession::TakenOver) -> Result<(), String> {
    // `usb9pfsd serve` mappings a predecessor handed over stay in force.
    config.serves = taken.serves;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async {
        let (tx, rx) = mpsc::unbounded_channel();
        let config_path = control.as_ref().map(|c| c.config_path.clone());
        let mut supervisor = Supervisor::new(config, Threads, notify, tx.clone())
            .with_handed_over(taken.sessions)
            .with_handed_over_serials(taken.serials)
            .with_lost(taken.lost);
        if let Some(path) = &config_path {
            supervisor = supervisor.with_config_path(path.clone());
        }
        let mut supervising = std::pin::pin!(supervisor.run(rx));
        // A daemon without its socket still serves its boards.
        let listener = control.as_ref().and_then(|c| {
            control::bind(&c.socket)
                .map_err(|e| tracing::warn!("{e}; `usb9pfsd status` and `usb9pfsd reload` cannot reach this daemon (SIGHUP still reloads)"))
                .ok()
        });
        let controlling = async {
            match listener {
                Some(l) => l.serve(tx.clone(), config_path.clone()).await,
                None => std::future::pending().await,
            }
        };
        let to_supervisor = tx.clone();
        let hotplug = hotplug::run(Sysfs::default(), move |ev| to_supervisor.send(Input::Hotplug(ev)).is_ok());
        let mut signals = Signals::register()?;
        // What SIGTERM left in the store: held until the process exits.
        let mut stored = None;
        let stopping = signals.until_stop(&tx, config_path.as_deref(), &mut stored);
        tokio::select! {
            _ = &mut supervising => Ok(()),
            r = hotplug => r.map_err(|e| e.to_string()),
            _ = controlling => Ok(()),
            s = stopping => {
                tracing::info!("{s}: stopping; boards with a request in flight get EIO");
                let _ = tx.send(Input::Shutdown);
                supervising.await;
                // Every server connection is broken now; let the workers hand
                // their EIO replies to the boards before the process goes.
                if !IN_FLIGHT.wait_idle(Duration::from_secs(2)) {
                    tracing::warn!("some boards did not take their last reply within 2 s");
                }
                Ok(())
            }
        }
    })
}

/// The signals the daemon answers, registered before it serves a board.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr2: Signal,
}

impl Signals {
    fn register() -> Result<Signals, String> {
        let on = |kind| signal(kind).map_err(|e| format!("cannot handle signals: {e}"));
        Ok(Signals {
            term: on(SignalKind::terminate())?,
            int: on(SignalKind::interrupt())?,
            hup: on(SignalKind::hangup())?,
            usr2: on(SignalKind::user_defined2())?,
        })
    }

    /// Answers SIGHUP (reload) and SIGUSR2 (re-exec) until SIGTERM or
    /// SIGINT, and names the one that came. Runs beside the supervisor, so
    /// it can answer the hand-overs these start; what a SIGTERM leaves in
    /// systemd's store goes to `stored`.
    async fn until_stop(
        &mut self,
        tx: &mpsc::UnboundedSender<Input>,
        config_path: Option<&Path>,
        stored: &mut Option<succession::Stored>,
    ) -> &'static str {
        loop {
            tokio::select! {
                _ = self.term.recv() => {
                    if succession::fd_store_enabled() {
                        *stored = leave_in_fd_store(tx, config_path).await;
                    }
                    break "SIGTERM";
                }
                _ = self.int.recv() => break "SIGINT",
                // The supervisor logs what changed, or the error with
                // file:line:column and keeps the old config.
                _ = self.hup.recv() => if let Err(e) = control::reload(tx, config_path).await {
                    tracing::debug!("SIGHUP: {e}");
                },
                _ = self.usr2.recv() => {
                    tracing::info!("SIGUSR2: re-executing in place; boards keep their sessions");
                    if let Err(e) = succession::reexec(tx, config_path, &[]).await {
                        tracing::error!("re-execution failed: {e}");
                    }
                }
            }
        }
    }
}

/// A restart (systemctl restart, a package upgrade) must not cost the
/// boards their sessions: on SIGTERM under systemd's descriptor store,
/// leave them there for the next start.
async fn leave_in_fd_store(tx: &mpsc::UnboundedSender<Input>, config_path: Option<&Path>) -> Option<succession::Stored> {
    if let Some(Err(e)) = config_path.map(Config::load) {
        tracing::error!(
            "SIGTERM: the next start will fail, its config does not load: {e}; the sessions wait in the store until a start with a fixed config (or a stop)"
        );
    }
    match succession::to_fd_store(tx).await {
        Ok(s) => {
            let list = |keys: &[BoardKey]| keys.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", ");
            tracing::info!(
                "SIGTERM: left {} board session(s) in systemd's descriptor store for the next start: {}",
                s.kept.len(),
                list(&s.kept)
            );
            if !s.busy.is_empty() {
                tracing::warn!(
                    "SIGTERM: board(s) {} were still waiting for their server: their request gets EIO and their 9P session ends",
                    list(&s.busy)
                );
            }
            Some(s)
        }
        Err(e) => {
            tracing::warn!("SIGTERM: cannot keep the sessions for the next start: {e}");
            None
        }
    }
}

/// `usb9pfsd status`: ask the running daemon.
fn show_status(json: bool, socket: &Path) -> Result<(), Failure> {
    let r = ask(socket, "status")?;
    let Some(report) = r.status.filter(|_| r.ok) else {
        return Err(r.error.unwrap_or_else(|| "usb9pfsd answered without a status".into()).into());
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    } else {
        print!("{}", status::table(&report));
    }
    Ok(())
}

/// `usb9pfsd reload` (the unit's ExecReload): exit 0 once the running
/// daemon has applied its config file, else 1 with why.
fn reload(socket: &Path) -> Result<(), Failure> {
    let r = ask(socket, "reload")?;
    match r.reload.filter(|_| r.ok) {
        Some(summary) => {
            println!("config reloaded: {summary}");
            Ok(())
        }
        None => Err(r.error.unwrap_or_else(|| "usb9pfsd answered without a result".into()).into()),
    }
}

/// `usb9pfsd reexec`: exit 0 once the new image has taken over every board.
fn reexec(socket: &Path) -> Result<(), Failure> {
    let r = ask(socket, "reexec")?;
    match (r.ok, r.reexec) {
        (true, Some(s)) => {
            println!("usb9pfsd re-executed in place; {} board session(s) handed over", s.boards);
            Ok(())
        }
        (false, Some(s)) => Err(format!(
            "usb9pfsd re-executed, but {} thing(s) could not be handed over (those boards start afresh): {}",
            s.refused.len(),
            s.refused.join("; ")
        )
        .into()),
        (_, None) => Err(r.error.unwrap_or_else(|| "usb9pfsd answered without a result".into()).into()),
    }
}

/// `forward` serves one gadget: refuse to guess among several.
fn check_single(c: &Config) -> Result<(), String> {
    if !usb9pfsd::list::single_gadget(c, &Sysfs::default().scan())? {
        tracing::info!("no matching usb9pfs gadget yet; waiting for one to be plugged in");
    }
    Ok(())
}

fn list(json: bool, config_path: Option<&Path>) -> Result<(), String> {
    let config = match config_path {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None if Path::new(config::DEFAULT_PATH).exists() => Config::load(Path::new(config::DEFAULT_PATH)).unwrap_or_else(|e| {
            eprintln!("usb9pfsd: {e}; listing without backends");
            Config::empty()
        }),
        None => Config::empty(),
    };
    let rows = usb9pfsd::list::rows(&config, &Sysfs::default().scan());
    if json {
        println!("{}", serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?);
    } else {
        print!("{}", usb9pfsd::list::table(&rows));
    }
    Ok(())
}

fn limits(t: &config::Target) -> String {
    let mut s = match t.request_timeout {
        Some(d) => format!("buflen {}, request_timeout {}s", t.buflen, d.as_secs()),
        None => format!("buflen {}", t.buflen),
    };
    if let Some(c) = usb9pfsd::daemon::status::ConfineStatus::of(&t.confine) {
        s.push_str(&format!("; confined: {c}"));
    }
    s
}

fn check_config(path: &Path, probe_as: Option<&cli::AttachArgs>) -> Result<(), Failure> {
    let (c, warnings) = Config::load_checked(path).map_err(|e| e.to_string())?;
    let mut warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    // A managed export that cannot be served (missing, root's): said now,
    // not at the board's first mount.
    for dir in c.managed_exports() {
        if let Err(e) = usb9pfsd::ninep::managed::owner(dir) {
            warnings.push(format!("{}: {e}", path.display()));
        }
    }
    println!("{}: OK{}", path.display(), if warnings.is_empty() { String::new() } else { format!(", {} warning(s)", warnings.len()) });
    for w in &warnings {
        eprintln!("usb9pfsd: warning: {w}");
    }
    match &c.default {
        Some(t) => println!("  unlisted boards -> {} ({})", t.backend, limits(t)),
        None => println!("  unlisted boards -> left alone"),
    }
    for r in &c.boards {
        let mut m = match &r.matcher {
            config::Match::Serial(s) => format!("serial {s}"),
            config::Match::Path(p) => format!("path {p}"),
            config::Match::SerialAt { serial, path } => format!("serial {serial} at path {path}"),
        };
        if let Some(i) = r.interface {
            m.push_str(&format!(" interface {i}"));
        }
        println!("  {m} -> {} ({})", r.target.backend, limits(&r.target));
    }
    if let Some(ids) = &c.allow_ids {
        let ids: Vec<String> = ids.iter().map(|(v, p)| usb9pfsd::board::usb_id(*v, *p)).collect();
        println!("  only VID:PID {}", ids.join(", "));
    }
    println!("  max_frame {}", c.max_frame);
    match probe_as {
        Some(a) => run_probes(probe::plans(&c), false, a),
        None => Ok(()),
    }
}

/// `usb9pfsd probe`: every entry of the config, or one `--backend`.
fn probe(
    config_path: &Path,
    backend: Option<&str>,
    export: Option<String>,
    squash_uid: Option<u32>,
    json: bool,
    attach: &cli::AttachArgs,
) -> Result<(), Failure> {
    let plans = match backend {
        Some(b) => {
            let backend = config::parse_backend(b).map_err(Failure::usage)?;
            let confine = usb9pfsd::ninep::confine::Policy { export, read_only: false, uid: squash_uid, gid: None };
            let target = config::Target {
                backend,
                buflen: config::DEFAULT_BUFLEN,
                request_timeout: None,
                recover_window: config::DEFAULT_RECOVER_WINDOW,
                confine,
            };
            vec![probe::Plan { entry: "--backend".into(), board: None, target: Ok(target) }]
        }
        None => {
            let c = Config::load(config_path).map_err(|e| e.to_string())?;
            let mut plans = probe::plans(&c);
            plans.extend(probe::plugged_plans(&c, &Sysfs::default().scan()));
            plans
        }
    };
    run_probes(plans, json, attach)
}

fn run_probes(plans: Vec<probe::Plan>, json: bool, a: &cli::AttachArgs) -> Result<(), Failure> {
    let board = probe::BoardAttach { aname: a.aname.clone(), uname: a.uname.clone(), uid: a.uid };
    let reports: Vec<probe::Report> = plans.iter().map(|p| p.run(&board)).collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&reports).map_err(|e| e.to_string())?);
    } else {
        if reports.is_empty() {
            println!("nothing to probe: the config maps no board ([defaults] backend or [[board]] entries)");
        }
        for r in &reports {
            println!("{}", r.text());
        }
    }
    let failed = reports.iter().filter(|r| !r.ok).count();
    match failed {
        0 => Ok(()),
        n => Err(Failure { code: cli::EXIT_FAILED, message: format!("{n} of {} probe(s) failed", reports.len()) }),
    }
}
