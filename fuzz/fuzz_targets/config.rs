//! The config loader (`Config::parse`) on arbitrary UTF-8: it must answer
//! every text with a Config or an error that names a place in the file,
//! never panic. Accepted configs are checked against the documented ranges.
#![no_main]

use std::collections::HashSet;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use usb9pfsd::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, Path::new("fuzz.toml")) {
        Ok(c) => {
            assert!((4096..=16 << 20).contains(&c.max_frame));
            let mut seen = HashSet::new();
            for rule in &c.boards {
                assert!(seen.insert((rule.matcher.clone(), rule.interface)), "duplicate {:?} interface {:?}", rule.matcher, rule.interface);
            }
            for target in c.default.iter().chain(c.boards.iter().map(|r| &r.target)) {
                assert!((512..=16 << 20).contains(&target.buflen));
                // Every accepted backend prints as text that parses back to it
                // (Serialize goes through Display).
                let shown = target.backend.to_string();
                assert_eq!(shown.parse().ok(), Some(target.backend.clone()), "{shown}");
            }
        }
        Err(e) => {
            let lines = text.split('\n').count();
            assert!(e.line <= lines, "error at line {} of {lines}", e.line);
            assert_eq!(e.line == 0, e.column == 0, "line {} column {}", e.line, e.column);
            let _ = e.to_string();
        }
    }
});
