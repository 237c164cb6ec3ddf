//! frame.rs on arbitrary bytes: size field, size checks, header, Tversion
//! body, the decoded log line and the error replies. The whole module must
//! not allocate, so everything runs under an allocation budget of zero.
#![no_main]

use std::fmt::Write as _;

use libfuzzer_sys::fuzz_target;
use usb9pfsd::ninep::frame::{self, Dialect, ERROR_REPLY_MAX, HEADER_LEN};
use usb9pfsd_fuzz::{budget, StackLine};

const CEILINGS: [u32; 6] = [0, 7, 8, 8192, usb9pfsd_fuzz::MAX_CEILING, u32::MAX];

fuzz_target!(|data: &[u8]| {
    budget(0, || check(data));
});

fn check(data: &[u8]) {
    let size = frame::peek_size(data);
    assert_eq!(size.is_some(), data.len() >= 4);
    if let Some(size) = size {
        for ceiling in CEILINGS {
            if frame::check_size(size, ceiling).is_ok() {
                assert!(HEADER_LEN as u32 <= size && size <= ceiling, "size {size} passed ceiling {ceiling}");
            }
        }
    }

    let header = frame::header(data);
    assert_eq!(header.is_some(), data.len() >= HEADER_LEN);
    if let Some(h) = header {
        assert_eq!(Some(h.size), size);
        let _ = frame::type_name(h.kind);
    }

    if let Some(v) = frame::version(data) {
        // msize and a version string that lies inside the frame.
        let len = u16::from_le_bytes([data[HEADER_LEN + 4], data[HEADER_LEN + 5]]) as usize;
        assert!(data.len() >= HEADER_LEN + 6 + len);
        assert_eq!(Some(v.msize), frame::peek_size(&data[HEADER_LEN..]));
    }

    let mut line = StackLine::new();
    let _ = write!(line, "{}", frame::Decoded(data));
    assert!(!line.as_bytes().is_empty());

    // The replies the forwarder writes itself, for whatever tag and errno.
    let tag = header.map_or(frame::NOTAG, |h| h.tag);
    let errno = data.get(HEADER_LEN..HEADER_LEN + 4).map_or(frame::EIO, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    for dialect in [Dialect::Linux, Dialect::Unix, Dialect::Plain] {
        let mut out = [0u8; ERROR_REPLY_MAX];
        let n = frame::error_reply(&mut out, dialect, tag, errno);
        assert!((HEADER_LEN..=ERROR_REPLY_MAX).contains(&n));
        let h = frame::header(&out[..n]).expect("an error reply has a header");
        assert_eq!((h.size as usize, h.tag), (n, tag));
        let want = if dialect == Dialect::Linux { frame::RLERROR } else { frame::RERROR };
        assert_eq!(h.kind, want);
    }
}
