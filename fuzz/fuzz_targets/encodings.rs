//! What crosses a process boundary as bytes someone else wrote: the
//! hand-over state a successor reads (`handover::State::decode`) and the
//! control socket's request and answer lines. Each must be refused or
//! accepted without a panic, and whatever is accepted must survive its own
//! encoding unchanged (a successor's successor reads what this one writes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use usb9pfsd::daemon::control::{Request, Response};
use usb9pfsd::daemon::handover::State;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = State::decode(data) {
        let again = State::decode(&state.encode()).expect("a decoded state re-encodes to a decodable one");
        assert_eq!(again, state);
        for b in &state.boards {
            assert!(b.bus > 0 && b.addr > 0 && b.addr <= 127);
            assert!(b.session.ceiling >= 7 && b.session.board_rx > 0);
        }
    }
    if let Ok(req) = serde_json::from_slice::<Request>(data) {
        let line = serde_json::to_vec(&req).expect("encode");
        assert_eq!(serde_json::from_slice::<Request>(&line).expect("decode"), req);
    }
    if let Ok(resp) = serde_json::from_slice::<Response>(data) {
        // The client reads one line and decodes it: the line must end the
        // answer, hold no other newline, and decode to what was sent.
        let line = resp.to_line();
        assert_eq!(line.last(), Some(&b'\n'));
        let body = &line[..line.len() - 1];
        assert!(!body.contains(&b'\n'), "an answer is one line");
        let again = serde_json::from_slice::<Response>(body).expect("a response's own line decodes");
        assert_eq!(again, resp);
    }
});
