//! The classifier and the path bookkeeping, against a scripted server.

use super::*;
use crate::ninep::fids::{QTDIR, QTSYMLINK};

const CEILING: u32 = 8192;

fn msg(kind: u8, tag: u16, body: &[u8]) -> Vec<u8> {
    let mut m = ((HEADER_LEN + body.len()) as u32).to_le_bytes().to_vec();
    m.push(kind);
    m.extend_from_slice(&tag.to_le_bytes());
    m.extend_from_slice(body);
    m
}

/// A body from fields: `B::D(u32)`, `B::S("name")`, ...
enum B<'a> {
    W(u16),
    D(u32),
    Q(u64),
    S(&'a [u8]),
}

fn body(fields: &[B]) -> Vec<u8> {
    let mut v = Vec::new();
    for f in fields {
        match f {
            B::W(x) => v.extend_from_slice(&x.to_le_bytes()),
            B::D(x) => v.extend_from_slice(&x.to_le_bytes()),
            B::Q(x) => v.extend_from_slice(&x.to_le_bytes()),
            B::S(s) => {
                v.extend_from_slice(&(s.len() as u16).to_le_bytes());
                v.extend_from_slice(s);
            }
        }
    }
    v
}

fn qid_bytes(path: u64, kind: u8) -> Vec<u8> {
    let mut b = vec![0u8; Qid::LEN];
    Qid { kind, version: 0, path }.put(&mut b);
    b
}

fn tattach(fid: u32, uname: &[u8], aname: &[u8], n_uname: u32) -> Vec<u8> {
    msg(TATTACH, 1, &body(&[B::D(fid), B::D(NOFID), B::S(uname), B::S(aname), B::D(n_uname)]))
}

fn twalk(fid: u32, newfid: u32, names: &[&[u8]]) -> Vec<u8> {
    let mut f = vec![B::D(fid), B::D(newfid), B::W(names.len() as u16)];
    f.extend(names.iter().map(|n| B::S(n)));
    msg(TWALK, 2, &body(&f))
}

/// A path-based server in miniature: each name walks to a qid whose path
/// is a hash of the name (`link*` names are symlinks, `..` gives 999:
/// "the parent of the export"); everything else succeeds.
#[derive(Default)]
struct Server {
    seen: Vec<Vec<u8>>,
    fail_next: Option<u32>,
}

fn name_qid(name: &[u8]) -> Vec<u8> {
    if name == b".." {
        return qid_bytes(999, QTDIR);
    }
    let h = name.iter().fold(7u64, |h, &b| h.wrapping_mul(31).wrapping_add(b as u64));
    qid_bytes(h, if name.starts_with(b"link") { QTSYMLINK } else { QTDIR })
}

impl Server {
    fn answer(&mut self, t: &[u8]) -> Vec<u8> {
        self.seen.push(t.to_vec());
        let tag = u16::from_le_bytes([t[5], t[6]]);
        if let Some(e) = self.fail_next.take() {
            return msg(RLERROR, tag, &e.to_le_bytes());
        }
        let kind = t[4];
        match kind {
            TATTACH => msg(kind + 1, tag, &qid_bytes(1, QTDIR)),
            TWALK => {
                let mut c = Cursor::new(&t[HEADER_LEN..]);
                c.u32();
                c.u32();
                let n = c.u16().unwrap_or(0);
                let mut b = n.to_le_bytes().to_vec();
                for _ in 0..n {
                    b.extend(name_qid(c.string().unwrap_or_default()));
                }
                msg(kind + 1, tag, &b)
            }
            TLOPEN | TLCREATE => msg(kind + 1, tag, &[qid_bytes(50, 0), 0u32.to_le_bytes().to_vec()].concat()),
            TMKDIR | TSYMLINK | TMKNOD => msg(kind + 1, tag, &qid_bytes(60, 0)),
            TXATTRWALK => msg(kind + 1, tag, &0u64.to_le_bytes()),
            _ => msg(kind + 1, tag, &[]),
        }
    }
}

/// What the board gets for `t`: the reply frame, or the errno usb9pfsd
/// answered itself (refused or failed).
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Reply(Vec<u8>),
    Err(u32),
}

fn ask(c: &mut Confine, srv: &mut Server, t: &[u8]) -> Got {
    let mut buf = vec![0u8; CEILING as usize];
    buf[..t.len()].copy_from_slice(t);
    let n = match c.request(&mut buf, t.len(), CEILING) {
        Verdict::Refuse(e) => return Got::Err(e),
        Verdict::Forward(n) => n,
    };
    let r = srv.answer(&buf[..n]);
    let mut rb = vec![0u8; CEILING as usize];
    rb[..r.len()].copy_from_slice(&r);
    let mut after = c.reply(&mut rb, r.len(), CEILING);
    loop {
        match after {
            After::Reply(len) => return Got::Reply(rb[..len].to_vec()),
            After::Refuse(e) | After::Fail(e) => return Got::Err(e),
            After::Send => {
                let out = c.out().to_vec();
                let r = srv.answer(&out);
                rb[..r.len()].copy_from_slice(&r);
                after = c.followed(&mut rb, r.len(), CEILING);
            }
        }
    }
}

fn policy(export: Option<&str>, read_only: bool, uid: Option<u32>, gid: Option<u32>) -> Confine {
    let p = Policy { export: export.map(str::to_string), read_only, uid, gid };
    Confine::new(Arc::new(p), Limits::default())
}

fn exported() -> (Confine, Server) {
    let mut c = policy(Some("/srv/boards/a"), false, None, None);
    let mut s = Server::default();
    assert!(matches!(ask(&mut c, &mut s, &tattach(0, b"root", b"", 0)), Got::Reply(_)));
    (c, s)
}

fn path(c: &Confine, fid: u32) -> String {
    String::from_utf8_lossy(c.table().and_then(|t| t.get(fid)).expect("fid").path()).into_owned()
}

fn rwalk_qids(r: &Got) -> Vec<u64> {
    let Got::Reply(r) = r else { panic!("{r:?}") };
    assert_eq!(r[4], TWALK + 1);
    let n = u16::from_le_bytes([r[7], r[8]]) as usize;
    assert_eq!(r.len(), 9 + n * Qid::LEN);
    (0..n).map(|i| Qid::parse(&r[9 + i * Qid::LEN..]).expect("qid").path).collect()
}

#[test]
fn read_only_refuses_exactly_the_write_class_with_erofs() {
    let mut c = policy(None, true, None, None);
    let mut s = Server::default();
    let name = |n: &'static [u8]| B::S(n);
    let refused = [
        msg(TWRITE, 1, &body(&[B::D(1), B::Q(0), B::D(1)])),
        msg(TLCREATE, 1, &body(&[B::D(1), name(b"f"), B::D(0), B::D(0o644), B::D(0)])),
        msg(TMKDIR, 1, &body(&[B::D(1), name(b"d"), B::D(0o755), B::D(0)])),
        msg(TMKNOD, 1, &body(&[B::D(1), name(b"n"), B::D(0), B::D(0), B::D(0), B::D(0)])),
        msg(TSYMLINK, 1, &body(&[B::D(1), name(b"l"), name(b"/etc"), B::D(0)])),
        msg(TLINK, 1, &body(&[B::D(1), B::D(2), name(b"h")])),
        msg(TRENAME, 1, &body(&[B::D(1), B::D(2), name(b"r")])),
        msg(TRENAMEAT, 1, &body(&[B::D(1), name(b"a"), B::D(2), name(b"b")])),
        msg(TUNLINKAT, 1, &body(&[B::D(1), name(b"u"), B::D(0)])),
        msg(TSETATTR, 1, &body(&[B::D(1), B::D(1), B::D(0), B::D(0), B::D(0), B::Q(0), B::Q(0), B::Q(0), B::Q(0), B::Q(0)])),
        msg(TXATTRCREATE, 1, &body(&[B::D(1), name(b"user.x"), B::Q(1), B::D(0)])),
    ];
    for t in &refused {
        assert_eq!(ask(&mut c, &mut s, t), Got::Err(EROFS), "{}", frame::type_name(t[4]));
    }
    assert!(s.seen.is_empty(), "none of them reached the server");
    for flags in [1u32, 2, 3, O_TRUNC, O_APPEND, O_CREAT] {
        let t = msg(TLOPEN, 1, &body(&[B::D(1), B::D(flags)]));
        assert_eq!(ask(&mut c, &mut s, &t), Got::Err(EROFS), "Tlopen flags {flags:o}");
    }
    // Tremove: the server clunks the fid (9P clunks it even on failure),
    // the file stays, the board gets EROFS.
    assert_eq!(ask(&mut c, &mut s, &msg(TREMOVE, 1, &1u32.to_le_bytes())), Got::Err(EROFS));
    assert_eq!(s.seen.pop().map(|t| t[4]), Some(TCLUNK));
    // Reads, walks, getattr, readdir, readlink, statfs, xattr reads, fsync
    // and locks pass.
    let passed = [
        msg(TLOPEN, 1, &body(&[B::D(1), B::D(0o200000)])), // O_RDONLY|O_DIRECTORY
        msg(TREAD, 1, &body(&[B::D(1), B::Q(0), B::D(10)])),
        twalk(1, 2, &[b"x"]),
        msg(TGETATTR, 1, &body(&[B::D(1), B::Q(0x7ff)])),
        msg(TREADDIR, 1, &body(&[B::D(1), B::Q(0), B::D(100)])),
        msg(TREADLINK, 1, &body(&[B::D(1)])),
        msg(TSTATFS, 1, &body(&[B::D(1)])),
        msg(TXATTRWALK, 1, &body(&[B::D(1), B::D(3), name(b"user.x")])),
        msg(TFSYNC, 1, &body(&[B::D(1), B::D(0)])),
        msg(TLOCK, 1, &body(&[B::D(1)])),
        msg(TGETLOCK, 1, &body(&[B::D(1)])),
        msg(TCLUNK, 1, &body(&[B::D(1)])),
    ];
    for t in &passed {
        assert!(matches!(ask(&mut c, &mut s, t), Got::Reply(_)), "{}", frame::type_name(t[4]));
    }
    assert_eq!(s.seen.len(), passed.len());
}

#[test]
fn squash_rewrites_the_attach_and_every_gid_and_refuses_owner_changes() {
    let mut c = policy(None, false, Some(1000), Some(100));
    let mut s = Server::default();
    assert!(matches!(ask(&mut c, &mut s, &tattach(0, b"root", b"/anything", 0)), Got::Reply(_)));
    assert_eq!(s.seen[0], tattach(0, b"", b"/anything", 1000), "uname emptied, n_uname squashed, aname kept (no export)");
    for t in [
        msg(TLCREATE, 1, &body(&[B::D(0), B::S(b"f"), B::D(0), B::D(0o644), B::D(0)])),
        msg(TMKDIR, 1, &body(&[B::D(0), B::S(b"d"), B::D(0o755), B::D(0)])),
        msg(TMKNOD, 1, &body(&[B::D(0), B::S(b"n"), B::D(0), B::D(0), B::D(0), B::D(0)])),
        msg(TSYMLINK, 1, &body(&[B::D(0), B::S(b"l"), B::S(b"t"), B::D(0)])),
    ] {
        assert!(matches!(ask(&mut c, &mut s, &t), Got::Reply(_)));
        let sent = s.seen.last().expect("sent");
        assert_eq!(sent.len(), t.len());
        assert_eq!(&sent[sent.len() - 4..], &100u32.to_le_bytes(), "{}: gid squashed", frame::type_name(t[4]));
        assert_eq!(&sent[..sent.len() - 4], &t[..t.len() - 4], "nothing else changed");
    }
    let setattr = |valid: u32| {
        msg(TSETATTR, 1, &body(&[B::D(0), B::D(valid), B::D(0), B::D(0), B::D(0), B::Q(0), B::Q(0), B::Q(0), B::Q(0), B::Q(0)]))
    };
    assert_eq!(ask(&mut c, &mut s, &setattr(ATTR_UID)), Got::Err(EPERM));
    assert_eq!(ask(&mut c, &mut s, &setattr(ATTR_GID | 1)), Got::Err(EPERM));
    assert!(matches!(ask(&mut c, &mut s, &setattr(1 | 8)), Got::Reply(_)), "mode and size pass");
}

#[test]
fn anames_are_confined_by_components_and_below_is_reached_by_walking() {
    for bad in
        [&b"/srv/boards/b"[..], b"/srv/boards/ab", b"/srv/boards", b"/srv/boards/a/../b", b"/srv/boards/a/./x", b"srv/boards/a", b"/"]
    {
        let mut c = policy(Some("/srv/boards/a"), false, None, None);
        let mut s = Server::default();
        assert_eq!(ask(&mut c, &mut s, &tattach(0, b"u", bad, 0)), Got::Err(EACCES), "{}", String::from_utf8_lossy(bad));
        assert!(s.seen.is_empty());
    }
    for good in [&b""[..], b"/srv/boards/a", b"/srv/boards/a/", b"//srv/boards//a"] {
        let mut c = policy(Some("/srv/boards/a"), false, None, None);
        let mut s = Server::default();
        assert_eq!(ask(&mut c, &mut s, &tattach(0, b"u", good, 5)), Got::Reply(msg(TATTACH + 1, 1, &qid_bytes(1, QTDIR))));
        assert_eq!(s.seen, vec![tattach(0, b"u", b"/srv/boards/a", 5)], "the server is asked for the export itself");
        assert_eq!(path(&c, 0), "");
    }
    // Below the export: attach to it, then walk, then the board's Rattach
    // carries the qid of where it asked to be.
    let mut c = policy(Some("/srv/boards/a"), false, None, None);
    let mut s = Server::default();
    let got = ask(&mut c, &mut s, &tattach(7, b"u", b"/srv/boards/a/x/y", 5));
    let mut want = msg(TATTACH + 1, 1, &name_qid(b"y"));
    want[5..7].copy_from_slice(&1u16.to_le_bytes());
    assert_eq!(got, Got::Reply(want));
    assert_eq!(s.seen[0], tattach(7, b"u", b"/srv/boards/a", 5));
    let mut walk = twalk(7, 7, &[b"x", b"y"]);
    walk[5..7].copy_from_slice(&1u16.to_le_bytes()); // with the board's tag
    assert_eq!(s.seen[1], walk, "then the rest is walked in place");
    assert_eq!(path(&c, 7), "x/y");
    assert_eq!(c.table().expect("table").get(7).expect("fid").depth, 2);
    // The walk fails: the fid is clunked on the server, the board gets the error.
    let mut c = policy(Some("/srv/boards/a"), false, None, None);
    let mut s = Server::default();
    let mut attach_then_fail = |t: &[u8]| {
        let mut buf = vec![0u8; CEILING as usize];
        buf[..t.len()].copy_from_slice(t);
        let Verdict::Forward(n) = c.request(&mut buf, t.len(), CEILING) else { panic!() };
        let r = s.answer(&buf[..n]);
        let mut rb = vec![0u8; 256];
        rb[..r.len()].copy_from_slice(&r);
        assert_eq!(c.reply(&mut rb, r.len(), CEILING), After::Send);
        let r = msg(RLERROR, 1, &ENOENT.to_le_bytes());
        rb[..r.len()].copy_from_slice(&r);
        assert_eq!(c.followed(&mut rb, r.len(), CEILING), After::Send);
        assert_eq!(c.out(), msg(TCLUNK, 1, &7u32.to_le_bytes()));
        let r = msg(TCLUNK + 1, 1, &[]);
        rb[..r.len()].copy_from_slice(&r);
        c.followed(&mut rb, r.len(), CEILING)
    };
    assert_eq!(attach_then_fail(&tattach(7, b"u", b"/srv/boards/a/missing", 5)), After::Fail(ENOENT));
    assert!(c.table().expect("table").get(7).is_none());
}

#[test]
fn an_attach_below_the_export_through_a_symlink_is_refused() {
    let mut c = policy(Some("/srv/boards/a"), false, None, None);
    let mut s = Server::default();
    assert_eq!(ask(&mut c, &mut s, &tattach(7, b"u", b"/srv/boards/a/link/etc", 5)), Got::Err(ELOOP));
    assert_eq!(s.seen.last().map(|t| t[4]), Some(TCLUNK), "the fid is clunked on the server");
    assert!(c.table().expect("table").get(7).is_none());
}

#[test]
fn dotdot_never_goes_above_the_export_whatever_the_server_does() {
    let (mut c, mut s) = exported();
    // `..` at the root: the server is asked for a walk of no names (a
    // clone), and the board gets the root's qid.
    let got = ask(&mut c, &mut s, &twalk(0, 1, &[b".."]));
    assert_eq!(rwalk_qids(&got), vec![1]);
    assert_eq!(s.seen.last(), Some(&twalk(0, 1, &[])));
    assert_eq!(path(&c, 1), "");
    // Stepwise and mixed: a/../../b from the root is b.
    let got = ask(&mut c, &mut s, &twalk(0, 2, &[b"a", b"..", b"..", b"b"]));
    let q = rwalk_qids(&got);
    assert_eq!(q.len(), 4);
    assert_eq!((q[1], q[2]), (999, 1), "the server's `..` from a (depth 1) is passed on; the one at the root is the root");
    assert_eq!(s.seen.last(), Some(&twalk(0, 2, &[b"a", b"..", b"b"])));
    assert_eq!(path(&c, 2), "b");
    // From deeper: d/e then `..` x3 clamps once.
    ask(&mut c, &mut s, &twalk(0, 3, &[b"d", b"e"]));
    let got = ask(&mut c, &mut s, &twalk(3, 4, &[b"..", b"..", b".."]));
    assert_eq!(rwalk_qids(&got).len(), 3);
    assert_eq!(s.seen.last(), Some(&twalk(3, 4, &[b"..", b".."])));
    assert_eq!(path(&c, 4), "");
    // No walk the server ever saw from the root began with `..`.
    for t in &s.seen {
        if t[4] == TWALK && u32::from_le_bytes([t[7], t[8], t[9], t[10]]) == 0 && t.len() > 17 {
            assert_ne!(&t[19..21], b"..", "{t:?}");
        }
    }
}

#[test]
fn a_partial_walk_ends_where_the_server_stopped() {
    let (mut c, mut s) = exported();
    // [.., x] at the root: the server walks [x] and fails it: Rlerror.
    s.fail_next = Some(ENOENT);
    assert_eq!(ask(&mut c, &mut s, &twalk(0, 1, &[b"..", b"x"])), Got::Reply(msg(RLERROR, 2, &ENOENT.to_le_bytes())));
    assert!(c.table().expect("table").get(1).is_none(), "no fid from a failed walk");
    // A partial Rwalk (1 of 2 server names) keeps the clamped qid in front.
    let mut buf = vec![0u8; 512];
    let t = twalk(0, 1, &[b"..", b"x", b"y"]);
    buf[..t.len()].copy_from_slice(&t);
    let Verdict::Forward(n) = c.request(&mut buf, t.len(), CEILING) else { panic!() };
    assert_eq!(&buf[..n], &twalk(0, 1, &[b"x", b"y"])[..]);
    let r = msg(TWALK + 1, 2, &[1u16.to_le_bytes().to_vec(), name_qid(b"x")].concat());
    let mut rb = vec![0u8; 512];
    rb[..r.len()].copy_from_slice(&r);
    let After::Reply(len) = c.reply(&mut rb, r.len(), CEILING) else { panic!() };
    assert_eq!(rwalk_qids(&Got::Reply(rb[..len].to_vec())).len(), 2, "root, x; y failed");
    assert!(c.table().expect("table").get(1).is_none());
}

#[test]
fn walks_through_symlinks_fail_and_symlink_fids_are_no_directories() {
    let (mut c, mut s) = exported();
    // The last name may be a symlink (the client reads it)...
    assert!(matches!(ask(&mut c, &mut s, &twalk(0, 1, &[b"link"])), Got::Reply(_)));
    // ... but nothing goes through it, in the same walk or a later one.
    assert_eq!(ask(&mut c, &mut s, &twalk(0, 2, &[b"link", b"passwd"])), Got::Err(ELOOP));
    assert_eq!(s.seen.last(), Some(&msg(TCLUNK, 2, &2u32.to_le_bytes())), "the new fid is clunked");
    assert!(c.table().expect("table").get(2).is_none());
    for t in [
        twalk(1, 3, &[b"passwd"]),
        twalk(1, 3, &[b".."]),
        msg(TLOPEN, 1, &body(&[B::D(1), B::D(0)])),
        msg(TLCREATE, 1, &body(&[B::D(1), B::S(b"f"), B::D(0), B::D(0), B::D(0)])),
        msg(TMKDIR, 1, &body(&[B::D(1), B::S(b"d"), B::D(0), B::D(0)])),
        msg(TSTATFS, 1, &body(&[B::D(1)])),
    ] {
        assert_eq!(ask(&mut c, &mut s, &t), Got::Err(ELOOP), "{}", frame::type_name(t[4]));
    }
    assert!(matches!(ask(&mut c, &mut s, &msg(TREADLINK, 1, &body(&[B::D(1)]))), Got::Reply(_)));
    assert!(matches!(ask(&mut c, &mut s, &msg(TGETATTR, 1, &body(&[B::D(1), B::Q(1)]))), Got::Reply(_)));
    // A walk in place through a symlink: the fid itself is clunked.
    ask(&mut c, &mut s, &twalk(0, 5, &[]));
    assert_eq!(ask(&mut c, &mut s, &twalk(5, 5, &[b"link", b"x"])), Got::Err(ELOOP));
    assert!(c.table().expect("table").get(5).is_none());
}

#[test]
fn names_with_slash_or_nul_are_einval_everywhere() {
    let (mut c, mut s) = exported();
    for bad in [&b"a/b"[..], b"a\0b", b"/", b""] {
        for t in [
            twalk(0, 1, &[bad]),
            msg(TLCREATE, 1, &body(&[B::D(0), B::S(bad), B::D(0), B::D(0), B::D(0)])),
            msg(TMKDIR, 1, &body(&[B::D(0), B::S(bad), B::D(0), B::D(0)])),
            msg(TMKNOD, 1, &body(&[B::D(0), B::S(bad), B::D(0), B::D(0), B::D(0), B::D(0)])),
            msg(TSYMLINK, 1, &body(&[B::D(0), B::S(bad), B::S(b"t"), B::D(0)])),
            msg(TLINK, 1, &body(&[B::D(0), B::D(0), B::S(bad)])),
            msg(TRENAMEAT, 1, &body(&[B::D(0), B::S(b"ok"), B::D(0), B::S(bad)])),
            msg(TRENAMEAT, 1, &body(&[B::D(0), B::S(bad), B::D(0), B::S(b"ok")])),
            msg(TUNLINKAT, 1, &body(&[B::D(0), B::S(bad), B::D(0)])),
        ] {
            assert_eq!(ask(&mut c, &mut s, &t), Got::Err(EINVAL), "{} {bad:?}", frame::type_name(t[4]));
        }
    }
    for bad in [&b"."[..], b".."] {
        let t = msg(TMKDIR, 1, &body(&[B::D(0), B::S(bad), B::D(0), B::D(0)]));
        assert_eq!(ask(&mut c, &mut s, &t), Got::Err(EINVAL));
    }
    assert_eq!(ask(&mut c, &mut s, &twalk(0, 1, &[b"."])), Got::Err(EINVAL));
    assert_eq!(ask(&mut c, &mut s, &msg(TXATTRWALK, 1, &body(&[B::D(0), B::D(1), B::S(b"a/b")]))), Got::Err(EINVAL));
    assert_eq!(s.seen.len(), 1, "only the attach reached the server");
}

#[test]
fn tauth_other_types_and_malformed_frames_are_refused() {
    let (mut c, mut s) = exported();
    let before = s.seen.len();
    assert_eq!(ask(&mut c, &mut s, &msg(TAUTH, 1, &body(&[B::D(1), B::S(b"u"), B::S(b""), B::D(0)]))), Got::Err(EACCES));
    for kind in [112u8, 114, 124, 126, 6, 0, 255] {
        assert_eq!(ask(&mut c, &mut s, &msg(kind, 1, &[0; 8])), Got::Err(EOPNOTSUPP), "type {kind}");
    }
    // Lengths that lie: a name longer than the frame, trailing bytes, 17 names.
    let mut t = twalk(0, 1, &[b"abc"]);
    t[17] = 200;
    assert_eq!(ask(&mut c, &mut s, &t), Got::Err(EINVAL));
    let mut t = twalk(0, 1, &[b"abc"]);
    t.push(0);
    let len = t.len() as u32;
    t[..4].copy_from_slice(&len.to_le_bytes());
    assert_eq!(ask(&mut c, &mut s, &t), Got::Err(EINVAL));
    let names: Vec<&[u8]> = vec![b"a"; 17];
    assert_eq!(ask(&mut c, &mut s, &twalk(0, 1, &names)), Got::Err(EINVAL));
    assert_eq!(ask(&mut c, &mut s, &msg(TATTACH, 1, &[1, 2, 3])), Got::Err(EINVAL));
    assert_eq!(s.seen.len(), before);
}

#[test]
fn walks_in_place_creates_renames_and_clunks_keep_the_paths() {
    let (mut c, mut s) = exported();
    ask(&mut c, &mut s, &twalk(0, 1, &[b"d"]));
    // In place: fid 1 moves down.
    ask(&mut c, &mut s, &twalk(1, 1, &[b"e"]));
    assert_eq!(path(&c, 1), "d/e");
    // Tlcreate turns the directory fid into the new, open file.
    ask(&mut c, &mut s, &msg(TLCREATE, 1, &body(&[B::D(1), B::S(b"f"), B::D(2), B::D(0o644), B::D(0)])));
    assert_eq!(path(&c, 1), "d/e/f");
    assert_eq!(c.table().and_then(|t| t.get(1)).and_then(|f| f.open), Some(2));
    // Renaming d (by Trenameat from the root) moves every fid below it; the
    // ones the server may still know by the old path are stale...
    ask(&mut c, &mut s, &twalk(0, 2, &[b"d"]));
    ask(&mut c, &mut s, &msg(TRENAMEAT, 1, &body(&[B::D(0), B::S(b"d"), B::D(0), B::S(b"z")])));
    assert_eq!((path(&c, 1), path(&c, 2)), ("z/e/f".to_string(), "z".to_string()));
    // ... so a walk from one gets ESTALE (a path-based server would walk
    // the old path, which may now be anything), while its open file works.
    assert_eq!(ask(&mut c, &mut s, &twalk(2, 3, &[b"e"])), Got::Err(ESTALE));
    assert!(matches!(ask(&mut c, &mut s, &msg(TGETATTR, 1, &body(&[B::D(1), B::Q(1)]))), Got::Reply(_)));
    assert!(matches!(ask(&mut c, &mut s, &msg(TREAD, 1, &body(&[B::D(1), B::Q(0), B::D(1)]))), Got::Reply(_)));
    // Trename moves the fid it names with the server: not stale.
    ask(&mut c, &mut s, &twalk(0, 4, &[b"q"]));
    ask(&mut c, &mut s, &twalk(0, 5, &[b"q", b"r"]));
    ask(&mut c, &mut s, &msg(TRENAME, 1, &body(&[B::D(4), B::D(0), B::S(b"w")])));
    assert_eq!((path(&c, 4), path(&c, 5)), ("w".to_string(), "w/r".to_string()));
    assert!(matches!(ask(&mut c, &mut s, &twalk(4, 6, &[b"x"])), Got::Reply(_)));
    assert_eq!(path(&c, 6), "w/x");
    assert_eq!(ask(&mut c, &mut s, &twalk(5, 7, &[b"x"])), Got::Err(ESTALE));
    // Unlink makes the fids at that path stale.
    ask(&mut c, &mut s, &msg(TUNLINKAT, 1, &body(&[B::D(4), B::S(b"x"), B::D(0)])));
    assert_eq!(ask(&mut c, &mut s, &msg(TLOPEN, 1, &body(&[B::D(6), B::D(0)]))), Got::Err(ESTALE));
    // Clunk and remove forget fids; the root cannot be removed or renamed.
    let n = c.table().expect("table").len();
    ask(&mut c, &mut s, &msg(TCLUNK, 1, &6u32.to_le_bytes()));
    ask(&mut c, &mut s, &msg(TREMOVE, 1, &4u32.to_le_bytes()));
    assert_eq!(c.table().expect("table").len(), n - 2);
    assert_eq!(ask(&mut c, &mut s, &msg(TREMOVE, 1, &0u32.to_le_bytes())), Got::Err(EBUSY));
    assert_eq!(s.seen.last().map(|t| t[4]), Some(TCLUNK), "clunked, not removed");
    assert!(c.table().expect("table").get(0).is_none());
    // A fid the board never got is EBADF, never forwarded.
    assert_eq!(ask(&mut c, &mut s, &twalk(42, 43, &[b"x"])), Got::Err(EBADF));
}

#[test]
fn past_the_caps_new_fids_are_refused_with_enfile() {
    let mut c = Confine::new(Arc::new(Policy { export: Some("/e".into()), ..Policy::default() }), Limits { fids: 3, path_bytes: 10 });
    let mut s = Server::default();
    ask(&mut c, &mut s, &tattach(0, b"u", b"", 0));
    ask(&mut c, &mut s, &twalk(0, 1, &[b"a"]));
    ask(&mut c, &mut s, &twalk(0, 2, &[b"b"]));
    assert_eq!(ask(&mut c, &mut s, &twalk(0, 3, &[b"c"])), Got::Err(ENFILE));
    assert!(matches!(ask(&mut c, &mut s, &twalk(2, 2, &[b"c"])), Got::Reply(_)), "in place is no new fid");
    assert_eq!(ask(&mut c, &mut s, &twalk(2, 2, &[b"0123456789"])), Got::Err(ENFILE), "path bytes");
    assert_eq!(ask(&mut c, &mut s, &tattach(5, b"u", b"", 0)), Got::Err(ENFILE));
    ask(&mut c, &mut s, &msg(TCLUNK, 1, &1u32.to_le_bytes()));
    assert!(matches!(ask(&mut c, &mut s, &twalk(0, 3, &[b"c"])), Got::Reply(_)));
    // One path past PATH_MAX is the name's fault: ENAMETOOLONG.
    let mut c = exported().0;
    let long = vec![b'n'; 255];
    let names: Vec<&[u8]> = vec![&long; 16];
    let mut srv = Server::default();
    ask(&mut c, &mut srv, &twalk(0, 1, &names));
    assert_eq!(ask(&mut c, &mut srv, &twalk(1, 2, &names[..1])), Got::Err(ENAMETOOLONG));
}

#[test]
fn versions_other_than_9p2000l_are_not_ok_and_unknown_is_well_formed() {
    let v = |name: &[u8]| msg(TVERSION, frame::NOTAG, &body(&[B::D(8192), B::S(name)]));
    assert!(Confine::version_ok(&v(b"9P2000.L")));
    assert!(!Confine::version_ok(&v(b"9P2000.u")) && !Confine::version_ok(&v(b"9P2000")));
    assert!(!Confine::version_ok(&v(b"9P2000.L")[..12]));
    let mut out = [0u8; 64];
    let n = rversion_unknown(&mut out, frame::NOTAG, 8192);
    assert_eq!(frame::version(&out[..n]).map(|v| v.msize), Some(8192));
    assert_eq!(&out[..n], &msg(TVERSION + 1, frame::NOTAG, &body(&[B::D(8192), B::S(b"unknown")]))[..]);
}

#[test]
fn refusals_are_logged_once_per_kind_and_a_remount_loop_does_not_start_afresh() {
    let mut c = policy(None, true, None, None);
    let mut s = Server::default();
    c.reset();
    let write = msg(TWRITE, 1, &body(&[B::D(1), B::Q(0), B::D(1)]));
    assert_eq!(ask(&mut c, &mut s, &write), Got::Err(EROFS));
    assert_eq!(c.logged, 1 << Refusal::ReadOnly as u8);
    // A new session within the minute: the kind stays logged.
    c.reset();
    assert_eq!(c.logged, 1 << Refusal::ReadOnly as u8);
    // A minute later the log may speak again.
    c.logged_since = c.logged_since.and_then(|t| t.checked_sub(LOG_AGAIN_AFTER));
    c.reset();
    assert_eq!(c.logged, 0);
}

#[test]
fn an_export_confined_board_cannot_make_device_nodes() {
    let (mut c, mut s) = exported();
    let mknod = |mode: u32| msg(TMKNOD, 1, &body(&[B::D(0), B::S(b"n"), B::D(mode), B::D(8), B::D(0), B::D(0)]));
    assert_eq!(ask(&mut c, &mut s, &mknod(libc::S_IFBLK | 0o600)), Got::Err(EPERM));
    assert_eq!(ask(&mut c, &mut s, &mknod(libc::S_IFCHR | 0o600)), Got::Err(EPERM));
    assert!(matches!(ask(&mut c, &mut s, &mknod(libc::S_IFIFO | 0o600)), Got::Reply(_)));
    assert!(matches!(ask(&mut c, &mut s, &mknod(libc::S_IFSOCK | 0o600)), Got::Reply(_)));
}
