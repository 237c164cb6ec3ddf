//! Log output: the systemd journal when systemd started us (JOURNAL_STREAM is
//! set), readable stderr otherwise. `-v` is debug, `-vv` adds one decoded
//! line per 9P message (target `usb9pfsd::wire`). RUST_LOG overrides both.
//! It must never panic: with no journal, it falls back to stderr.

use std::io::IsTerminal;

use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

pub fn init(verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        match tracing_journald::layer() {
            Ok(layer) => {
                registry.with(layer.with_syslog_identifier("usb9pfsd".into())).init();
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
