//! The backend reply path (`Backend::exchange`) against a 9P server that
//! sends arbitrary bytes: the fuzz input is what the server end of a unix
//! socket pair writes before it closes its sending side.
//!
//! Input: one byte picks the reply buffer's length and the session ceiling
//! (and whether the request has a header, i.e. a tag to match), two bytes
//! are the request's tag, the rest is the server's byte stream. The forwarder
//! then exchanges requests until the stream fails; every reply it accepts is
//! checked. exchange must not allocate (budget 0).
#![no_main]

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;

use libfuzzer_sys::fuzz_target;
use usb9pfsd::ninep::backend::Backend;
use usb9pfsd::ninep::frame::{self, HEADER_LEN};
use usb9pfsd_fuzz::{budget, Input, MAX_CEILING};

/// forward.rs gives exchange a buffer of max(max_frame, ERROR_REPLY_MAX).
const BUF_LENS: [usize; 4] = [frame::ERROR_REPLY_MAX, 4096, 8192, MAX_CEILING as usize];
const CEILINGS: [u32; 8] = [0, 7, 8, 11, 4096, 8192, MAX_CEILING, u32::MAX];
/// What the server end writes at most; a unix socket's default send buffer
/// takes this without a reader, so no thread is needed.
const MAX_STREAM: usize = 64 * 1024;

thread_local! {
    static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; MAX_CEILING as usize]);
}

fuzz_target!(
    init: {
        // libFuzzer's main is not Rust's: SIGPIPE is not ignored for us.
        // SAFETY: setting a signal disposition before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    },
    |data: &[u8]| {
    let mut input = Input::new(data);
    let pick = input.u8();
    let buf_len = BUF_LENS[usize::from(pick) % BUF_LENS.len()];
    let ceiling = CEILINGS[usize::from(pick >> 2) % CEILINGS.len()];
    let with_header = pick & 0x20 == 0;
    let tag = input.u16();
    let stream = input.rest();
    let stream = &stream[..stream.len().min(MAX_STREAM)];

    // A Tclunk: size, type, tag, fid. Without header: 3 bytes, no tag to match.
    let mut t = [11, 0, 0, 0, 120, 0, 0, 1, 0, 0, 0];
    t[5..7].copy_from_slice(&tag.to_le_bytes());
    let t: &[u8] = if with_header { &t } else { &t[..3] };

    let (client, mut server) = match UnixStream::pair() {
        Ok(p) => p,
        Err(e) => panic!("socketpair: {e}"),
    };
    if let Err(e) = server.set_nonblocking(true) {
        panic!("set_nonblocking: {e}");
    }
    // Whatever the socket buffer takes (all of MAX_STREAM on Linux defaults);
    // never blocks, so a small buffer shortens the stream instead of hanging.
    let mut fed = 0;
    while fed < stream.len() {
        match server.write(&stream[fed..]) {
            Ok(n) => fed += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("feeding the server stream: {e}"),
        }
    }
    if let Err(e) = server.shutdown(Shutdown::Write) {
        panic!("shutdown: {e}");
    }
    let mut backend = Backend::from_unix(client);

    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let buf = &mut buf[..buf_len];
        // Until the stream fails: closed, bad size, wrong tag.
        while let Ok(n) = budget(0, || backend.exchange(t, buf, ceiling, None)) {
            assert!(HEADER_LEN <= n && n <= buf_len && n as u64 <= u64::from(ceiling), "{n}");
            assert_eq!(frame::peek_size(buf), Some(n as u32));
            if with_header {
                assert_eq!(frame::header(&buf[..n]).map(|h| h.tag), Some(tag));
            }
            // Drain the requests so the socket's buffer never fills up.
            let mut sink = [0u8; 256];
            loop {
                match server.read(&mut sink) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("draining requests: {e}"),
                }
            }
        }
    });
});
