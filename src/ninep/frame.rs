//! 9P message framing: the `size[4] type[1] tag[2]` header, size validation
//! against the session's ceiling, the few message bodies the forwarder must
//! understand (Tversion/Rversion msize and dialect), and the error replies it
//! writes itself when the backend cannot answer.
//!
//! Everything here works on caller-owned byte slices. It must never allocate
//! per message and never do I/O: the worker's hot path calls it for every frame.

use std::fmt;

/// Bytes in `size[4] type[1] tag[2]`; also the smallest legal message.
pub const HEADER_LEN: usize = 7;
/// The tag a Tversion carries.
pub const NOTAG: u16 = 0xffff;

pub const TLERROR: u8 = 6;
pub const RLERROR: u8 = 7;
pub const TVERSION: u8 = 100;
pub const RVERSION: u8 = 101;
pub const RERROR: u8 = 107;

/// Linux errno values the forwarder answers with.
pub const EIO: u32 = 5;

// 9P2000.L message types and limits (include/net/9p/9p.h).
pub const NOFID: u32 = !0;
pub const NONUNAME: u32 = !0;
/// Most names in one Twalk (MAXWELEM).
pub const MAXWELEM: usize = 16;

pub const TSTATFS: u8 = 8;
pub const TLOPEN: u8 = 12;
pub const TLCREATE: u8 = 14;
pub const TSYMLINK: u8 = 16;
pub const TMKNOD: u8 = 18;
pub const TRENAME: u8 = 20;
pub const TREADLINK: u8 = 22;
pub const TGETATTR: u8 = 24;
pub const TSETATTR: u8 = 26;
pub const TXATTRWALK: u8 = 30;
pub const TXATTRCREATE: u8 = 32;
pub const TREADDIR: u8 = 40;
pub const TFSYNC: u8 = 50;
pub const TLOCK: u8 = 52;
pub const TGETLOCK: u8 = 54;
pub const TLINK: u8 = 70;
pub const TMKDIR: u8 = 72;
pub const TRENAMEAT: u8 = 74;
pub const TUNLINKAT: u8 = 76;
pub const TAUTH: u8 = 102;
pub const TATTACH: u8 = 104;
pub const TFLUSH: u8 = 108;
pub const TWALK: u8 = 110;
pub const TREAD: u8 = 116;
pub const TWRITE: u8 = 118;
pub const TCLUNK: u8 = 120;
pub const TREMOVE: u8 = 122;

/// Longest Tlock client id kept (the Linux client sends its host name).
pub const MAX_CLIENT_ID: usize = 256;

/// A name of one file: no `/`, no NUL, not empty, not `.` or `..`.
pub fn good_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

/// A parsed Tlock: fid, the lock, its client id.
pub fn tlock(t: &[u8]) -> Option<(u32, crate::ninep::fids::Lock, &[u8])> {
    let mut c = crate::ninep::wire::Cursor::new(t.get(HEADER_LEN..)?);
    let fid = c.u32()?;
    let kind = c.u8()?;
    let _flags = c.u32()?;
    let (start, length, proc_id) = (c.u64()?, c.u64()?, c.u32()?);
    let client = c.string()?;
    Some((fid, crate::ninep::fids::Lock { kind, start, length, proc_id }, client))
}

/// Whether an Rlock says the lock was taken (P9_LOCK_SUCCESS).
pub fn rlock_ok(r: &[u8]) -> bool {
    r.get(4) == Some(&(TLOCK + 1)) && r.get(HEADER_LEN) == Some(&0)
}

/// The fixed header of every 9P message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub size: u32,
    pub kind: u8,
    pub tag: u16,
}

/// Why a frame was refused. Each variant says what a person needs to know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("9P frame declares size {size}, below the 7-byte minimum")]
    TooSmall { size: u32 },
    #[error("9P frame declares size {size}, above this session's ceiling of {ceiling} bytes (negotiated msize or max_frame)")]
    TooLarge { size: u32, ceiling: u32 },
    #[error("{count} empty USB transfers in a row instead of a 9P frame")]
    StrayZlps { count: u32 },
    #[error("9P frame declares size {declared} but its transfer carried {got} bytes")]
    LengthMismatch { declared: u32, got: usize },
    /// The board began a message and then sent nothing for `waited_s`
    /// seconds; `declared` is `None` when not even its size field arrived
    /// whole. Its request is lost, and a real board's mount then hangs: the
    /// text says what to do about that.
    #[error(
        "the board sent {got} of the {} and then nothing for {waited_s} s (stuck mid-message), so that request is lost: \
         if the board's 9P mount hangs now, unmount and mount it again on the board (or reset the board); \
         if this repeats, look for usb9pfs errors in the board's kernel log",
        declared_bytes(.declared)
    )]
    Unfinished { got: usize, declared: Option<u32>, waited_s: u64 },
}

fn declared_bytes(declared: &Option<u32>) -> String {
    match declared {
        Some(n) => format!("{n} bytes its 9P message declares"),
        None => "4 bytes of a 9P message's size field".to_string(),
    }
}

/// Reads the little-endian size field; `None` if fewer than 4 bytes.
pub fn peek_size(buf: &[u8]) -> Option<u32> {
    let b: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// Checks a declared size against the protocol minimum and the ceiling.
/// Called before any byte beyond the size field is read or stored.
pub fn check_size(size: u32, ceiling: u32) -> Result<(), FrameError> {
    if size < HEADER_LEN as u32 {
        return Err(FrameError::TooSmall { size });
    }
    if size > ceiling {
        return Err(FrameError::TooLarge { size, ceiling });
    }
    Ok(())
}

/// Parses the header of a complete, size-checked frame.
pub fn header(frame: &[u8]) -> Option<Header> {
    if frame.len() < HEADER_LEN {
        return None;
    }
    Some(Header { size: peek_size(frame)?, kind: frame[4], tag: u16::from_le_bytes([frame[5], frame[6]]) })
}

/// Whether an R-message of type `r` can answer a T-message of type `t`: its
/// own reply (T+1) or an error reply.
pub fn answers(t: u8, r: u8) -> bool {
    r == t.wrapping_add(1) || r == RLERROR || r == RERROR
}

/// Which error reply a session expects, from the Tversion version string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Dialect {
    /// 9P2000.L: errors are `Rlerror` with a Linux errno.
    #[default]
    Linux,
    /// 9P2000.u: `Rerror` with a string and an errno.
    Unix,
    /// Plain 9P2000: `Rerror` with a string only.
    Plain,
}

/// The parts of a Tversion/Rversion body the forwarder needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    pub msize: u32,
    pub dialect: Dialect,
}

/// Parses `msize[4] version[s]` from a T/Rversion frame.
pub fn version(frame: &[u8]) -> Option<Version> {
    let body = frame.get(HEADER_LEN..)?;
    let msize = peek_size(body)?;
    let len = u16::from_le_bytes([*body.get(4)?, *body.get(5)?]) as usize;
    let name = body.get(6..6 + len)?;
    let dialect = match name {
        b"9P2000.L" => Dialect::Linux,
        b"9P2000.u" => Dialect::Unix,
        _ => Dialect::Plain,
    };
    Some(Version { msize, dialect })
}

/// Writes the error reply for `tag` into `out` and returns its length.
/// `out` must hold at least [`ERROR_REPLY_MAX`] bytes.
pub fn error_reply(out: &mut [u8], dialect: Dialect, tag: u16, errno: u32) -> usize {
    let mut w = Writer { out, pos: 4 };
    match dialect {
        Dialect::Linux => {
            w.put(&[RLERROR]);
            w.put(&tag.to_le_bytes());
            w.put(&errno.to_le_bytes());
        }
        Dialect::Unix | Dialect::Plain => {
            let text = errno_text(errno).as_bytes();
            w.put(&[RERROR]);
            w.put(&tag.to_le_bytes());
            w.put(&(text.len() as u16).to_le_bytes());
            w.put(text);
            if dialect == Dialect::Unix {
                w.put(&errno.to_le_bytes());
            }
        }
    }
    let len = w.pos;
    out[..4].copy_from_slice(&(len as u32).to_le_bytes());
    len
}

/// Enough room for any reply [`error_reply`] writes.
pub const ERROR_REPLY_MAX: usize = 128;

struct Writer<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.out[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }
}

fn errno_text(errno: u32) -> &'static str {
    match errno as i32 {
        libc::ECONNREFUSED => "usb9pfsd: 9P server refused the connection",
        libc::ETIMEDOUT => "usb9pfsd: 9P server did not answer",
        libc::EHOSTUNREACH | libc::ENETUNREACH => "usb9pfsd: 9P server unreachable",
        _ => "usb9pfsd: 9P server unavailable",
    }
}

/// Human name of a 9P2000/9P2000.L/9P2000.u message type, for logs.
pub fn type_name(kind: u8) -> &'static str {
    match kind {
        6 => "Tlerror",
        7 => "Rlerror",
        8 => "Tstatfs",
        9 => "Rstatfs",
        12 => "Tlopen",
        13 => "Rlopen",
        14 => "Tlcreate",
        15 => "Rlcreate",
        16 => "Tsymlink",
        17 => "Rsymlink",
        18 => "Tmknod",
        19 => "Rmknod",
        20 => "Trename",
        21 => "Rrename",
        22 => "Treadlink",
        23 => "Rreadlink",
        24 => "Tgetattr",
        25 => "Rgetattr",
        26 => "Tsetattr",
        27 => "Rsetattr",
        30 => "Txattrwalk",
        31 => "Rxattrwalk",
        32 => "Txattrcreate",
        33 => "Rxattrcreate",
        40 => "Treaddir",
        41 => "Rreaddir",
        50 => "Tfsync",
        51 => "Rfsync",
        52 => "Tlock",
        53 => "Rlock",
        54 => "Tgetlock",
        55 => "Rgetlock",
        70 => "Tlink",
        71 => "Rlink",
        72 => "Tmkdir",
        73 => "Rmkdir",
        74 => "Trenameat",
        75 => "Rrenameat",
        76 => "Tunlinkat",
        77 => "Runlinkat",
        100 => "Tversion",
        101 => "Rversion",
        102 => "Tauth",
        103 => "Rauth",
        104 => "Tattach",
        105 => "Rattach",
        106 => "Terror",
        107 => "Rerror",
        108 => "Tflush",
        109 => "Rflush",
        110 => "Twalk",
        111 => "Rwalk",
        112 => "Topen",
        113 => "Ropen",
        114 => "Tcreate",
        115 => "Rcreate",
        116 => "Tread",
        117 => "Rread",
        118 => "Twrite",
        119 => "Rwrite",
        120 => "Tclunk",
        121 => "Rclunk",
        122 => "Tremove",
        123 => "Rremove",
        124 => "Tstat",
        125 => "Rstat",
        126 => "Twstat",
        127 => "Rwstat",
        _ => "unknown",
    }
}

/// One decoded line for the most verbose log level: `Twalk tag=3 size=23`.
pub struct Decoded<'a>(pub &'a [u8]);

impl fmt::Display for Decoded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match header(self.0) {
            Some(h) => write!(f, "{} tag={} size={}", type_name(h.kind), h.tag, h.size),
            None => write!(f, "short frame of {} bytes", self.0.len()),
        }
    }
}

/// `EPERM (Operation not permitted)`.
pub fn errno_name(errno: u32) -> String {
    let text = std::io::Error::from_raw_os_error(errno as i32).to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    format!("{} ({text})", errno_symbol(errno))
}

fn errno_symbol(errno: u32) -> String {
    let name = match errno as i32 {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EACCES => "EACCES",
        libc::ENOTDIR => "ENOTDIR",
        libc::EINVAL => "EINVAL",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ELOOP => "ELOOP",
        libc::ENFILE => "ENFILE",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EROFS => "EROFS",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn tversion(msize: u32, name: &str) -> Vec<u8> {
        let mut v = vec![0; 4];
        v.push(TVERSION);
        v.extend_from_slice(&NOTAG.to_le_bytes());
        v.extend_from_slice(&msize.to_le_bytes());
        v.extend_from_slice(&(name.len() as u16).to_le_bytes());
        v.extend_from_slice(name.as_bytes());
        let n = v.len() as u32;
        v[..4].copy_from_slice(&n.to_le_bytes());
        v
    }

    #[test]
    fn size_limits() {
        for bad in [0, 1, 4, 6] {
            assert_eq!(check_size(bad, 8192), Err(FrameError::TooSmall { size: bad }));
        }
        assert_eq!(check_size(7, 8192), Ok(()));
        assert_eq!(check_size(8192, 8192), Ok(()));
        assert_eq!(check_size(8193, 8192), Err(FrameError::TooLarge { size: 8193, ceiling: 8192 }));
        assert!(check_size(u32::MAX, 8192).is_err());
    }

    #[test]
    fn parses_version_and_dialect() {
        let t = tversion(16384, "9P2000.L");
        assert_eq!(header(&t).map(|h| (h.kind, h.tag)), Some((TVERSION, NOTAG)));
        assert_eq!(version(&t), Some(Version { msize: 16384, dialect: Dialect::Linux }));
        assert_eq!(version(&tversion(8192, "9P2000.u")).map(|v| v.dialect), Some(Dialect::Unix));
        assert_eq!(version(&tversion(8192, "9P2000")).map(|v| v.dialect), Some(Dialect::Plain));
        // A version string longer than the frame is not trusted.
        let mut t = tversion(8192, "9P2000.L");
        t[11] = 200;
        assert_eq!(version(&t), None);
        assert_eq!(version(&t[..9]), None);
    }

    #[test]
    fn rlerror_is_eleven_bytes_with_tag_and_errno() {
        let mut out = [0u8; ERROR_REPLY_MAX];
        let n = error_reply(&mut out, Dialect::Linux, 0x1234, EIO);
        assert_eq!(&out[..n], &[11, 0, 0, 0, RLERROR, 0x34, 0x12, 5, 0, 0, 0]);
    }

    #[test]
    fn rerror_carries_text_and_errno_for_unix() {
        let mut out = [0u8; ERROR_REPLY_MAX];
        let n = error_reply(&mut out, Dialect::Unix, 7, 111);
        let h = header(&out[..n]).expect("header");
        assert_eq!((h.size as usize, h.kind, h.tag), (n, RERROR, 7));
        assert_eq!(&out[n - 4..n], &111u32.to_le_bytes());
        let plain = error_reply(&mut out, Dialect::Plain, 7, 111);
        assert_eq!(plain, n - 4);
    }

    #[test]
    fn decoded_line() {
        let t = tversion(8192, "9P2000.L");
        assert_eq!(Decoded(&t).to_string(), format!("Tversion tag=65535 size={}", t.len()));
        assert_eq!(Decoded(&t[..3]).to_string(), "short frame of 3 bytes");
    }

    #[test]
    fn an_unfinished_message_says_how_much_came_and_what_to_do() {
        let e = FrameError::Unfinished { got: 2048, declared: Some(8192), waited_s: 30 }.to_string();
        assert!(e.starts_with("the board sent 2048 of the 8192 bytes its 9P message declares and then nothing for 30 s"), "{e}");
        assert!(e.contains("unmount and mount it again"), "{e}");
        let e = FrameError::Unfinished { got: 3, declared: None, waited_s: 30 }.to_string();
        assert!(e.starts_with("the board sent 3 of the 4 bytes of a 9P message's size field"), "{e}");
    }
}
