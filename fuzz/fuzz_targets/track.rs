//! track.rs (what an unconfined board's session holds, for recovery) and
//! recover.rs's message-path gate against a hostile board and a server that
//! answers anything.
//!
//! Input: steps until the input ends. A step is a selector byte: below 0x40
//! a raw frame follows (a length byte, then that many bytes; its size field
//! is made to match, as the frame loop guarantees); from 0x40 a structured
//! request (attach, walk, open, create, clunk, remove, rename, renameat,
//! unlinkat, xattrwalk, xattrcreate, lock, read, write) with small fid
//! numbers and names from a dictionary of the usual trouble (`..`, `.`,
//! `a/b`, NUL, empty). One more byte per step picks the server's answer: an
//! error, a walk that stops early, a reply of the wrong type, or success
//! with a qid from the byte.
//!
//! Checked after every step: the table's own bookkeeping holds (counts,
//! references, depths) and it never grows past its caps (a small table, so
//! the caps are reached); a path never holds `.`, an empty name or `/`
//! inside a name; no allocation at all while Tread, Twrite and Tclunk are
//! seen and answered, nor in the gate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use usb9pfsd::ninep::fids::{Limits, Qid};
use usb9pfsd::ninep::frame::{HEADER_LEN, RLERROR};
use usb9pfsd::ninep::recover;
use usb9pfsd::ninep::track::Tracker;
use usb9pfsd_fuzz::{budget, Input};

const NAMES: [&[u8]; 9] = [b"a", b"b", b"..", b".", b"", b"a/b", b"a\0", b"c", b"..."];
const TYPES: [u8; 14] = [104, 110, 12, 14, 120, 122, 20, 74, 76, 30, 32, 52, 116, 118];

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = ((HEADER_LEN + body.len()) as u32).to_le_bytes().to_vec();
    m.push(kind);
    m.extend_from_slice(&1u16.to_le_bytes());
    m.extend_from_slice(body);
    m
}

fn s(b: &mut Vec<u8>, x: &[u8]) {
    b.extend_from_slice(&(x.len() as u16).to_le_bytes());
    b.extend_from_slice(x);
}

fn name(inp: &mut Input) -> &'static [u8] {
    NAMES[inp.u8() as usize % NAMES.len()]
}

fn request(inp: &mut Input) -> Option<Vec<u8>> {
    let kind = TYPES[inp.u8() as usize % TYPES.len()];
    let fid = (inp.u8() % 8) as u32;
    let other = (inp.u8() % 8) as u32;
    let mut b = fid.to_le_bytes().to_vec();
    match kind {
        104 => {
            b.extend_from_slice(&u32::MAX.to_le_bytes());
            s(&mut b, b"root");
            s(&mut b, b"/srv/x");
            b.extend_from_slice(&0u32.to_le_bytes());
        }
        110 => {
            b.extend_from_slice(&other.to_le_bytes());
            let n = inp.u8() % 5;
            b.extend_from_slice(&(n as u16).to_le_bytes());
            for _ in 0..n {
                let nm = NAMES[inp.u8() as usize % NAMES.len()];
                s(&mut b, nm);
            }
        }
        12 => b.extend_from_slice(&(inp.u8() as u32 * 0o100).to_le_bytes()),
        14 => {
            s(&mut b, name(inp));
            b.extend_from_slice(&0o1101u32.to_le_bytes());
            b.extend_from_slice(&0o644u32.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
        }
        20 => {
            b.extend_from_slice(&other.to_le_bytes());
            s(&mut b, name(inp));
        }
        74 => {
            s(&mut b, name(inp));
            b.extend_from_slice(&other.to_le_bytes());
            s(&mut b, name(inp));
        }
        76 => {
            s(&mut b, name(inp));
            b.extend_from_slice(&0u32.to_le_bytes());
        }
        30 => {
            b.extend_from_slice(&other.to_le_bytes());
            s(&mut b, name(inp));
        }
        32 => {
            s(&mut b, name(inp));
            b.extend_from_slice(&0u64.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
        }
        52 => {
            b.push(inp.u8() % 3);
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&(inp.u8() as u64).to_le_bytes());
            b.extend_from_slice(&(inp.u8() as u64 % 3).to_le_bytes());
            b.extend_from_slice(&(inp.u8() as u32 % 2).to_le_bytes());
            s(&mut b, b"board");
        }
        116 | 118 => {
            b.extend_from_slice(&0u64.to_le_bytes());
            b.extend_from_slice(&16u32.to_le_bytes());
        }
        _ => {}
    }
    Some(frame(kind, &b))
}

/// The server's answer to `t`, chosen by `how`.
fn answer(t: &[u8], how: u8) -> Vec<u8> {
    let kind = t[4];
    let mut q = [0u8; Qid::LEN];
    Qid { kind: if how & 0x10 != 0 { 0x80 } else { 0 }, version: 0, path: (how >> 2) as u64 }.put(&mut q);
    match how % 4 {
        0 => frame(RLERROR, &2u32.to_le_bytes()),
        1 if kind == 110 => {
            let n = u16::from_le_bytes([t.get(15).copied().unwrap_or(0), t.get(16).copied().unwrap_or(0)]);
            let got = n.saturating_sub(1);
            let mut b = got.to_le_bytes().to_vec();
            for _ in 0..got {
                b.extend_from_slice(&q);
            }
            frame(111, &b)
        }
        1 => frame(kind.wrapping_add(3), &q),
        _ => match kind {
            110 => {
                let n = u16::from_le_bytes([t.get(15).copied().unwrap_or(0), t.get(16).copied().unwrap_or(0)]).min(16);
                let mut b = n.to_le_bytes().to_vec();
                for _ in 0..n {
                    b.extend_from_slice(&q);
                }
                frame(111, &b)
            }
            52 => frame(53, &[how >> 7]),
            104 | 12 | 14 => frame(kind + 1, &[&q[..], &[0u8; 4][..]].concat()),
            _ => frame(kind.wrapping_add(1), &[]),
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let mut t = Tracker::new(Limits { fids: 6, path_bytes: 64 });
    while !inp.is_empty() {
        let sel = inp.u8();
        let req = if sel < 0x40 {
            let n = inp.u8();
            let mut m = inp.bytes(n as usize).to_vec();
            if m.len() < HEADER_LEN {
                continue;
            }
            let len = m.len() as u32;
            m[..4].copy_from_slice(&len.to_le_bytes());
            m
        } else {
            let Some(r) = request(&mut inp) else { break };
            r
        };
        let how = inp.u8();
        let rep = answer(&req, how);
        if matches!(req[4], 116 | 118 | 120) {
            // The read/write path: nothing allocated, even by the gate.
            budget(0, || {
                let _ = recover::gate(&req, t.table());
                t.request(&req);
                t.reply(&rep);
            });
        } else {
            t.request(&req);
            t.reply(&rep);
        }
        if let Err(e) = t.table().check() {
            panic!("the fid table's bookkeeping broke: {e}");
        }
        for (n, f) in t.table().iter() {
            let p = f.path();
            assert!(
                p.is_empty() || p.split(|&b| b == b'/').all(|c| !c.is_empty() && c != b"." && !c.contains(&0)),
                "fid {n} has path {:?}",
                String::from_utf8_lossy(p)
            );
        }
        if sel == 0x7f {
            t.reset();
        }
    }
});
