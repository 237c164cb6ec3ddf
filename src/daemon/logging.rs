//! Log output: the systemd journal when systemd started us (JOURNAL_STREAM is
//! set), readable stderr otherwise. `-v` is debug, `-vv` adds one decoded
//! line per 9P message (target `usb9pfsd::wire`). RUST_LOG overrides both.
//!
//! In the journal every line about a board names it in its message
//! (`board 0001-A at 001-004#0: ...`: serial, bus-address, interface), taken
//! from the worker's `board` span or from the event's own `serial`,
//! `busaddr` and `iface` fields, and carries it as fields to filter by:
//! `BOARD_SERIAL`, `BOARD_BUSADDR`, `BOARD_INTERFACE` (README, man page).
//! Other fields of an event follow the message (`backend=...`) and are
//! fields of their own in upper case (`BACKEND`).
//!
//! It must never panic: with no journal, or a line the journal refuses, it
//! writes to stderr.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// journald's socket for structured entries (systemd's native protocol).
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

pub fn init(verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        match Journal::new(PathBuf::from(JOURNAL_SOCKET)) {
            Ok(layer) => {
                registry.with(layer).init();
                return;
            }
            Err(e) => eprintln!("usb9pfsd: journald unavailable ({e}); logging to stderr"),
        }
    }
    registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                // Colour only for people: logs captured to files stay greppable.
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
}

/// Which board a line is about, from a span's or an event's fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoardId {
    pub serial: Option<String>,
    pub busaddr: Option<String>,
    pub interface: Option<String>,
}

impl BoardId {
    fn known(&self) -> bool {
        self.serial.is_some() || self.busaddr.is_some()
    }

    /// Takes a field if it names the board; false for any other field.
    fn take(&mut self, name: &str, value: &str) -> bool {
        let slot = match name {
            "serial" => &mut self.serial,
            "busaddr" => &mut self.busaddr,
            "iface" | "interface" => &mut self.interface,
            _ => return false,
        };
        *slot = Some(value.to_string());
        true
    }

    /// Fills what this one lacks from `outer` (an enclosing span).
    fn or(&mut self, outer: &BoardId) {
        for (mine, theirs) in
            [(&mut self.serial, &outer.serial), (&mut self.busaddr, &outer.busaddr), (&mut self.interface, &outer.interface)]
        {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
    }

    /// `board 0001-A at 001-004#0`, or as much of it as is known.
    pub fn label(&self) -> String {
        let mut s = String::from("board");
        if let Some(serial) = &self.serial {
            let _ = write!(s, " {serial}");
        }
        if let Some(at) = &self.busaddr {
            let _ = write!(s, " at {at}");
            if let Some(i) = &self.interface {
                let _ = write!(s, "#{i}");
            }
        }
        s
    }
}

/// An event's message, the board it names, and its other fields.
#[derive(Default)]
struct Fields {
    message: String,
    board: BoardId,
    other: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        self.record_text(field, text);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_text(field, value.to_string());
    }
}

impl Fields {
    fn record_text(&mut self, field: &Field, text: String) {
        match field.name() {
            "message" => self.message = text,
            name if self.board.take(name, &text) => {}
            name => self.other.push((name, text)),
        }
    }
}

/// The journal entry's MESSAGE: the board first, then what happened, then
/// the event's other fields.
pub fn message(board: &BoardId, text: &str, other: &[(&str, String)]) -> String {
    let mut m = if board.known() { format!("{}: {text}", board.label()) } else { text.to_string() };
    for (k, v) in other {
        let _ = write!(m, " {k}={v}");
    }
    m
}

/// One journal entry in systemd's native protocol: `NAME=value` lines, and
/// the length-prefixed form for values with a newline.
pub fn entry(level: &Level, target: &str, board: &BoardId, text: &str, other: &[(&str, String)]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    let priority = match *level {
        Level::ERROR => "3",
        Level::WARN => "4",
        Level::INFO => "6",
        _ => "7",
    };
    put(&mut buf, "PRIORITY", priority);
    put(&mut buf, "SYSLOG_IDENTIFIER", "usb9pfsd");
    put(&mut buf, "MESSAGE", &message(board, text, other));
    put(&mut buf, "TARGET", target);
    for (name, value) in [("BOARD_SERIAL", &board.serial), ("BOARD_BUSADDR", &board.busaddr), ("BOARD_INTERFACE", &board.interface)] {
        if let Some(v) = value {
            put(&mut buf, name, v);
        }
    }
    for (k, v) in other {
        let name: String = k.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
        // Journal field names start with a letter; ours never clash with
        // the ones above.
        if name.starts_with(|c: char| c.is_ascii_alphabetic())
            && !matches!(name.as_str(), "MESSAGE" | "PRIORITY" | "SYSLOG_IDENTIFIER" | "TARGET")
        {
            put(&mut buf, &name, v);
        }
    }
    buf
}

fn put(buf: &mut Vec<u8>, name: &str, value: &str) {
    buf.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value.as_bytes());
    buf.push(b'\n');
}

/// The journal layer: one datagram per event to journald's socket.
pub struct Journal {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Journal {
    pub fn new(path: PathBuf) -> std::io::Result<Journal> {
        let socket = UnixDatagram::unbound()?;
        // Fails here, at start, if there is no journal to talk to.
        socket.connect(&path)?;
        Ok(Journal { socket, path })
    }
}

impl<S> tracing_subscriber::Layer<S> for Journal
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        attrs.record(&mut f);
        if let (true, Some(span)) = (f.board.known() || f.board.interface.is_some(), ctx.span(id)) {
            span.extensions_mut().insert(f.board);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut f = Fields::default();
        values.record(&mut f);
        let mut ext = span.extensions_mut();
        match ext.get_mut::<BoardId>() {
            Some(b) => {
                let outer = std::mem::take(b);
                f.board.or(&outer);
                *b = f.board;
            }
            None if f.board.known() => ext.insert(f.board),
            None => {}
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(b) = span.extensions().get::<BoardId>() {
                    f.board.or(b);
                }
            }
        }
        let meta = event.metadata();
        let buf = entry(meta.level(), meta.target(), &f.board, &f.message, &f.other);
        // journald may have restarted: send to its path, not to the
        // connection made at start.
        if self.socket.send(&buf).is_err() && self.socket.send_to(&buf, &self.path).is_err() {
            let _ = writeln!(std::io::stderr(), "{}", message(&f.board, &f.message, &f.other));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fields of a native-protocol entry (single-line values only).
    fn fields(d: &[u8]) -> Vec<(String, String)> {
        String::from_utf8_lossy(d).lines().filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect()
    }

    fn field<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
        f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Lines as the worker (its `board` span) and the supervisor (the
    /// event's own fields) write them reach the journal with the board in
    /// the message and as fields to filter by.
    #[test]
    fn every_board_line_names_its_board_in_the_message_and_fields() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("journal");
        let journal = UnixDatagram::bind(&path).expect("bind");
        let layer = Journal::new(path).expect("layer");
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("board", serial = %"0001-A", busaddr = %"001-004", iface = 1u8);
            let _enter = span.enter();
            tracing::warn!(errno = 1u32, "board's mount refused");
            drop(_enter);
            tracing::info!(serial = %"0002-B", busaddr = %"001-005", iface = 0u8, "board removed");
            tracing::info!(busaddr = %"001-006", iface = 2u8, "a handed-over board is gone");
            tracing::info!("3 board(s) served");
            tracing::error!("two\nlines");
        });
        let mut buf = vec![0u8; 65536];
        let mut next = || {
            let n = journal.recv(&mut buf).expect("an entry");
            fields(&buf[..n])
        };
        let e = next();
        assert_eq!(field(&e, "MESSAGE"), Some("board 0001-A at 001-004#1: board's mount refused errno=1"));
        assert_eq!(field(&e, "PRIORITY"), Some("4"));
        assert_eq!(field(&e, "SYSLOG_IDENTIFIER"), Some("usb9pfsd"));
        assert_eq!(
            (field(&e, "BOARD_SERIAL"), field(&e, "BOARD_BUSADDR"), field(&e, "BOARD_INTERFACE")),
            (Some("0001-A"), Some("001-004"), Some("1"))
        );
        assert_eq!(field(&e, "ERRNO"), Some("1"));
        let e = next();
        assert_eq!(field(&e, "MESSAGE"), Some("board 0002-B at 001-005#0: board removed"));
        assert_eq!(field(&e, "BOARD_SERIAL"), Some("0002-B"));
        let e = next();
        assert_eq!(field(&e, "MESSAGE"), Some("board at 001-006#2: a handed-over board is gone"));
        assert_eq!(field(&e, "BOARD_SERIAL"), None);
        let e = next();
        assert_eq!(field(&e, "MESSAGE"), Some("3 board(s) served"), "a line about no board names none");
        assert_eq!(field(&e, "BOARD_BUSADDR"), None);
        let n = journal.recv(&mut buf).expect("an entry");
        let raw = &buf[..n];
        let want = [b"MESSAGE\n".as_slice(), &9u64.to_le_bytes(), b"two\nlines\n"].concat();
        assert!(raw.windows(want.len()).any(|w| w == want.as_slice()), "a value with a newline is length-prefixed");
    }

    #[test]
    fn no_journal_is_an_error_at_start_not_a_panic() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(Journal::new(dir.path().join("none")).is_err());
    }
}
