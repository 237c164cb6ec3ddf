//! confine.rs (the T-message classifier and rewriter, and the fid table
//! behind it) against a hostile board and a model of a path-based server.
//!
//! Input: one byte picks the policy (bit 0 export "/e", 1 read_only, 2 uid,
//! 3 gid) and the session ceiling (bits 4-5); then steps until the input
//! ends. A step is a selector byte: below 0x80 a raw frame follows (a length
//! byte, then up to 262 bytes; its size field is made to match, as the
//! frame loop guarantees); from 0x80 a structured request (type, small fid
//! numbers, names and anames from a dictionary of the usual escapes: `..`,
//! `.`, `a/b`, NUL, symlinks, neighbours). One more byte per step: 0 makes
//! the server fail the request.
//!
//! The model server resolves like diod: by path, `..` at its export root
//! goes to the parent, a name walked through a symlink leaves the export.
//! Checked after every step, with an export: no server fid ever lies above
//! the export or outside it, nothing is created through a symlink, every
//! attach the server sees is to the export; with read_only no write-class
//! request reaches the server; with uid every attach is made as that uid.
//! Every frame sent and every reply given back is well-formed and within the
//! ceiling. Allocation: at most 64 KiB at a time (paths are capped at 4 KiB;
//! nothing may follow a declared size), and none at all for Tread, Twrite
//! and Tclunk.
#![no_main]

use std::collections::HashMap;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use usb9pfsd::ninep::confine::{self, After, Confine, Policy, Verdict};
use usb9pfsd::ninep::fids::{Limits, Qid, QTDIR, QTSYMLINK};
use usb9pfsd::ninep::frame::{self, HEADER_LEN, RLERROR};
use usb9pfsd_fuzz::{budget, Input};

const CEILINGS: [u32; 4] = [256, 4096, 8192, 65536];
const UID: u32 = 1000;
const GID: u32 = 100;
const NAMES: [&[u8]; 12] = [b"a", b"b", b"..", b".", b"", b"link", b"a/b", b"a\0", b"..a", b"c", b"link2", b"d"];
const ANAMES: [&[u8]; 10] = [b"", b"/e", b"/e/a", b"/e/a/b", b"/e/../f", b"/f", b"/e/link/x", b"/", b"/ef", b"e"];

#[derive(Clone, Copy)]
struct ModelFid {
    /// Components below the server's export root; negative: above it.
    depth: i64,
    symlink: bool,
    /// Resolved through a symlink: anywhere on the host.
    outside: bool,
}

#[derive(Default)]
struct Model {
    fids: HashMap<u32, ModelFid>,
    /// Something was created, linked, renamed or removed through a symlink
    /// or outside the export.
    wrote_outside: bool,
}

fn qid(kind: u8, path: u64) -> [u8; 13] {
    let mut b = [0u8; 13];
    Qid { kind, version: 0, path }.put(&mut b);
    b
}

fn reply(out: &mut Vec<u8>, kind: u8, tag: u16, body: &[u8]) {
    out.clear();
    out.extend_from_slice(&((HEADER_LEN + body.len()) as u32).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(body);
}

struct Rd<'a>(&'a [u8], usize);

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.0.get(self.1..self.1 + n)?;
        self.1 += n;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_le_bytes([s[0], s[1]]))
    }
    fn s(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
}

impl Model {
    fn dir(&self, fid: u32) -> Option<ModelFid> {
        self.fids.get(&fid).copied()
    }

    /// A name created in directory `d` (by path): outside if `d` is.
    fn create_in(&mut self, d: Option<ModelFid>) {
        if let Some(d) = d {
            if d.symlink || d.outside || d.depth < 0 {
                self.wrote_outside = true;
            }
        }
    }

    /// The server's answer to `t`, as a path-based server would give it.
    fn answer(&mut self, t: &[u8], fail: bool, export: bool, out: &mut Vec<u8>) {
        let tag = u16::from_le_bytes([t[5], t[6]]);
        let kind = t[4];
        let mut r = Rd(&t[HEADER_LEN..], 0);
        if fail {
            // 9P clunks the fid of a failed Tclunk or Tremove too.
            if kind == confine::TCLUNK || kind == confine::TREMOVE {
                if let Some(fid) = r.u32() {
                    self.fids.remove(&fid);
                }
            }
            return reply(out, RLERROR, tag, &2u32.to_le_bytes());
        }
        let err = |out: &mut Vec<u8>| reply(out, RLERROR, tag, &9u32.to_le_bytes());
        match kind {
            confine::TATTACH => {
                let (Some(fid), Some(_), Some(uname), Some(aname), Some(n_uname)) = (r.u32(), r.u32(), r.s(), r.s(), r.u32()) else {
                    return err(out);
                };
                if export {
                    assert_eq!(aname, b"/e", "the server was asked for an aname other than the export");
                }
                let _ = (uname, n_uname);
                let depth = if aname == b"/e" { 0 } else { -100 };
                self.fids.insert(fid, ModelFid { depth, symlink: false, outside: false });
                reply(out, kind + 1, tag, &qid(QTDIR, 1));
            }
            confine::TWALK => {
                let (Some(fid), Some(newfid), Some(n)) = (r.u32(), r.u32(), r.u16()) else { return err(out) };
                let Some(mut at) = self.dir(fid) else { return err(out) };
                let mut body = Vec::new();
                body.extend_from_slice(&0u16.to_le_bytes());
                let mut got = 0u16;
                for _ in 0..n {
                    let Some(name) = r.s() else { return err(out) };
                    if at.symlink {
                        // Resolved through the host's symlink.
                        at.outside = true;
                    }
                    if name == b".." {
                        at.depth -= 1;
                    } else {
                        at.depth += 1;
                    }
                    at.symlink = name.starts_with(b"link");
                    let kind = if at.symlink { QTSYMLINK } else { QTDIR };
                    body.extend_from_slice(&qid(kind, at.depth as u64));
                    got += 1;
                }
                body[..2].copy_from_slice(&got.to_le_bytes());
                self.fids.insert(newfid, at);
                reply(out, kind + 1, tag, &body);
            }
            confine::TLOPEN => {
                let Some(fid) = r.u32() else { return err(out) };
                let Some(f) = self.dir(fid) else { return err(out) };
                if f.symlink || f.outside {
                    self.wrote_outside = true; // open() follows the link
                }
                let mut b = qid(0, 5).to_vec();
                b.extend_from_slice(&0u32.to_le_bytes());
                reply(out, kind + 1, tag, &b);
            }
            confine::TLCREATE => {
                let Some(fid) = r.u32() else { return err(out) };
                let d = self.dir(fid);
                self.create_in(d);
                if let Some(mut f) = d {
                    f.depth += 1;
                    self.fids.insert(fid, f);
                }
                let mut b = qid(0, 6).to_vec();
                b.extend_from_slice(&0u32.to_le_bytes());
                reply(out, kind + 1, tag, &b);
            }
            confine::TMKDIR | confine::TSYMLINK | confine::TMKNOD => {
                let Some(fid) = r.u32() else { return err(out) };
                let d = self.dir(fid);
                self.create_in(d);
                reply(out, kind + 1, tag, &qid(0, 7));
            }
            confine::TUNLINKAT | confine::TLINK => {
                let Some(fid) = r.u32() else { return err(out) };
                let d = self.dir(fid);
                self.create_in(d);
                reply(out, kind + 1, tag, &[]);
            }
            confine::TRENAMEAT => {
                let Some(ofid) = r.u32() else { return err(out) };
                let _ = r.s();
                let Some(nfid) = r.u32() else { return err(out) };
                let (o, n) = (self.dir(ofid), self.dir(nfid));
                self.create_in(o);
                self.create_in(n);
                reply(out, kind + 1, tag, &[]);
            }
            confine::TRENAME => {
                let (Some(fid), Some(dfid)) = (r.u32(), r.u32()) else { return err(out) };
                let d = self.dir(dfid);
                self.create_in(d);
                if let (Some(mut f), Some(d)) = (self.dir(fid), d) {
                    f.depth = d.depth + 1;
                    self.fids.insert(fid, f);
                }
                reply(out, kind + 1, tag, &[]);
            }
            confine::TCLUNK | confine::TREMOVE => {
                if let Some(fid) = r.u32() {
                    self.fids.remove(&fid);
                }
                reply(out, kind + 1, tag, &[]);
            }
            confine::TXATTRWALK => {
                let (Some(fid), Some(newfid)) = (r.u32(), r.u32()) else { return err(out) };
                if let Some(f) = self.dir(fid) {
                    self.fids.insert(newfid, f);
                }
                reply(out, kind + 1, tag, &0u64.to_le_bytes());
            }
            _ => reply(out, kind + 1, tag, &[]),
        }
    }
}

fn frame(out: &mut Vec<u8>, kind: u8, tag: u16, body: &[u8]) {
    reply(out, kind, tag, body);
}

fn put_s(b: &mut Vec<u8>, s: &[u8]) {
    b.extend_from_slice(&(s.len() as u16).to_le_bytes());
    b.extend_from_slice(s);
}

/// A structured request from the input.
fn structured(input: &mut Input, sel: u8, out: &mut Vec<u8>) {
    let fid = |i: &mut Input| (i.u8() & 7) as u32;
    let name = |i: &mut Input| NAMES[i.u8() as usize % NAMES.len()];
    let mut b = Vec::new();
    let kind = match sel % 22 {
        0 => {
            b.extend_from_slice(&fid(input).to_le_bytes());
            b.extend_from_slice(&confine::NOFID.to_le_bytes());
            put_s(&mut b, b"root");
            put_s(&mut b, ANAMES[input.u8() as usize % ANAMES.len()]);
            b.extend_from_slice(&0u32.to_le_bytes());
            confine::TATTACH
        }
        1..=4 => {
            b.extend_from_slice(&fid(input).to_le_bytes());
            b.extend_from_slice(&fid(input).to_le_bytes());
            let n = input.u8() % 6;
            b.extend_from_slice(&(n as u16).to_le_bytes());
            for _ in 0..n {
                put_s(&mut b, name(input));
            }
            confine::TWALK
        }
        5 => {
            b.extend_from_slice(&fid(input).to_le_bytes());
            b.extend_from_slice(&(input.u16() as u32).to_le_bytes());
            confine::TLOPEN
        }
        6 => {
            b.extend_from_slice(&fid(input).to_le_bytes());
            put_s(&mut b, name(input));
            b.extend_from_slice(&[0; 12]);
            confine::TLCREATE
        }
        7 => {
            b.extend_from_slice(&fid(input).to_le_bytes());
            put_s(&mut b, name(input));
            b.extend_from_slice(&[0; 8]);
            confine::TMKDIR
        }
        8 => {
            b.extend_from_slice(&fid(input).to_le_bytes());
            put_s(&mut b, name(input));
            put_s(&mut b, b"/etc");
            b.extend_from_slice(&[0; 4]);
            confine::TSYMLINK
        }
        9 => {
            b.extend_from_slice(&fid(input).to_le_bytes());
            b.extend_from_slice(&fid(input).to_le_bytes());
            put_s(&mut b, name(input));
            confine::TRENAME
        }
        10 => {
            b.extend_from_slice(&fid(input).to_le_bytes());
            put_s(&mut b, name(input));
            b.extend_from_slice(&fid(input).to_le_bytes());
            put_s(&mut b, name(input));
            confine::TRENAMEAT
        }
        11 => {
            b.extend_from_slice(&fid(input).to_le_bytes());
            put_s(&mut b, name(input));
            b.extend_from_slice(&[0; 4]);
            confine::TUNLINKAT
        }
        12 => {
            b.extend_from_slice(&fid(input).to_le_bytes());
            b.extend_from_slice(&fid(input).to_le_bytes());
            put_s(&mut b, name(input));
            confine::TLINK
        }
        13 => {
            b.extend_from_slice(&fid(input).to_le_bytes());
            confine::TREMOVE
        }
        14 | 15 => {
            b.extend_from_slice(&fid(input).to_le_bytes());
            confine::TCLUNK
        }
        16 => {
            b.extend_from_slice(&fid(input).to_le_bytes());
            b.extend_from_slice(&[0; 12]);
            confine::TREAD
        }
        17 => {
            b.extend_from_slice(&fid(input).to_le_bytes());
            b.extend_from_slice(&[0; 12]);
            b.extend_from_slice(input.bytes(4));
            confine::TWRITE
        }
        18 => {
            b.extend_from_slice(&fid(input).to_le_bytes());
            b.extend_from_slice(&(input.u8() as u32).to_le_bytes());
            b.extend_from_slice(&[0; 56]);
            confine::TSETATTR
        }
        19 => {
            b.extend_from_slice(&fid(input).to_le_bytes());
            b.extend_from_slice(&fid(input).to_le_bytes());
            put_s(&mut b, name(input));
            confine::TXATTRWALK
        }
        20 => {
            b.extend_from_slice(&fid(input).to_le_bytes());
            b.extend_from_slice(&[0; 8]);
            confine::TGETATTR
        }
        _ => {
            b.extend_from_slice(&fid(input).to_le_bytes());
            confine::TSTATFS
        }
    };
    frame(out, kind, 1, &b);
}

fn write_class(kind: u8) -> bool {
    use confine::*;
    matches!(
        kind,
        TWRITE | TLCREATE | TMKDIR | TMKNOD | TSYMLINK | TLINK | TRENAME | TRENAMEAT | TUNLINKAT | TREMOVE | TSETATTR | TXATTRCREATE
    )
}

fn check_frame(b: &[u8], len: usize, ceiling: u32) {
    assert!(len >= HEADER_LEN && len <= ceiling as usize && len <= b.len(), "length {len} outside 7..={ceiling}");
    assert_eq!(frame::peek_size(b), Some(len as u32), "size field disagrees with the length");
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let pick = input.u8();
    let policy = Policy {
        export: (pick & 1 != 0).then(|| "/e".to_string()),
        read_only: pick & 2 != 0,
        uid: (pick & 4 != 0).then_some(UID),
        gid: (pick & 8 != 0).then_some(GID),
    };
    let ceiling = CEILINGS[(pick >> 4) as usize & 3];
    let export = policy.export.is_some();
    let (read_only, uid) = (policy.read_only, policy.uid);
    let mut c = Confine::new(Arc::new(policy), Limits { fids: 16, path_bytes: 256 });
    let mut model = Model::default();
    let mut buf = vec![0u8; ceiling as usize];
    let mut rbuf = vec![0u8; ceiling as usize];
    let (mut t, mut r) = (Vec::with_capacity(512), Vec::with_capacity(512));
    while !input.is_empty() {
        let sel = input.u8();
        if sel < 0x80 {
            let len = HEADER_LEN + input.u8() as usize;
            t.clear();
            t.extend_from_slice(input.bytes(len));
            t.resize(len, 0);
            t[..4].copy_from_slice(&(len as u32).to_le_bytes());
        } else {
            structured(&mut input, sel, &mut t);
        }
        let fail = input.u8() == 0;
        if t.len() > ceiling as usize {
            continue; // the frame loop refuses it before confine sees it
        }
        let kind = t[4];
        buf[..t.len()].copy_from_slice(&t);
        let hot = matches!(kind, confine::TREAD | confine::TCLUNK) || (kind == confine::TWRITE && !read_only);
        let limit = if hot { 0 } else { 64 << 10 };
        let verdict = budget(limit, || c.request(&mut buf, t.len(), ceiling));
        let Verdict::Forward(n) = verdict else { continue };
        check_frame(&buf, n, ceiling);
        let sent = buf[4];
        assert!(sent == kind || (kind == confine::TREMOVE && sent == confine::TCLUNK), "type {kind} became {sent}");
        if read_only {
            assert!(!write_class(sent), "read_only let {} through", frame::type_name(sent));
        }
        if sent == confine::TATTACH && uid.is_some() {
            let mut rd = Rd(&buf[HEADER_LEN..n], 8);
            assert_eq!(rd.s(), Some(&b""[..]), "uname not emptied");
            let _ = rd.s();
            assert_eq!(rd.u32(), uid, "n_uname not squashed");
        }
        model.answer(&buf[..n], fail, export, &mut r);
        rbuf[..r.len()].copy_from_slice(&r);
        let mut after = budget(limit, || c.reply(&mut rbuf, r.len(), ceiling));
        let mut rounds = 0;
        loop {
            match after {
                After::Reply(len) => {
                    check_frame(&rbuf, len, ceiling);
                    break;
                }
                After::Refuse(_) | After::Fail(_) => break,
                After::Send => {
                    rounds += 1;
                    assert!(rounds < 300, "our own exchanges never end");
                    let out = c.out().to_vec();
                    assert!(out.len() <= ceiling as usize || out.len() <= 4096 + 300, "our own T-message is {} bytes", out.len());
                    check_frame(&out, out.len(), u32::MAX);
                    // Our own follow-ups are walks in place and clunks.
                    assert!(matches!(out[4], confine::TWALK | confine::TCLUNK));
                    model.answer(&out, false, export, &mut r);
                    rbuf[..r.len()].copy_from_slice(&r);
                    after = c.followed(&mut rbuf, r.len(), ceiling);
                }
            }
        }
        if export {
            assert!(!model.wrote_outside, "the server acted through a symlink or outside the export");
            for (fid, f) in &model.fids {
                assert!(f.depth >= 0 && !f.outside, "server fid {fid} lies outside the export (depth {})", f.depth);
            }
        }
        if let Some(table) = c.table() {
            assert!(table.len() <= 16 && table.path_bytes() <= 256, "table past its caps");
            for (_, f) in table.iter() {
                let p = f.path();
                let depth = if p.is_empty() { 0 } else { p.iter().filter(|&&b| b == b'/').count() + 1 };
                assert_eq!(depth, f.depth as usize, "depth disagrees with the path");
                assert!(p.is_empty() || p.split(|&b| b == b'/').all(confine::good_name), "a bad component in a tracked path");
            }
        }
    }
});
