//! 9P fields in a byte buffer: a bounds-checked reader ([`Cursor`]) and a
//! writer into a buffer the caller sized ([`Writer`]), for the modules that
//! read or build 9P2000.L messages field by field (confinement, session
//! tracking, recovery).
//!
//! It must never trust a length: every read is checked against the buffer
//! and fails (None) instead of panicking. It must never allocate.

/// A bounds-checked reader of 9P fields.
pub struct Cursor<'a> {
    b: &'a [u8],
    /// Bytes read so far.
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(b: &'a [u8]) -> Cursor<'a> {
        Cursor { b, pos: 0 }
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_le_bytes([s[0], s[1]]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|s| u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]))
    }

    pub fn string(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    pub fn done(&self) -> bool {
        self.pos == self.b.len()
    }
}

/// Writes 9P fields into a buffer the caller sized (a write past its end is
/// a bug of the caller's sizing, and panics).
pub struct Writer<'a> {
    b: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub fn new(b: &'a mut [u8]) -> Writer<'a> {
        Writer { b, pos: 0 }
    }

    pub fn put(&mut self, s: &[u8]) {
        self.b[self.pos..self.pos + s.len()].copy_from_slice(s);
        self.pos += s.len();
    }

    pub fn header(&mut self, len: usize, kind: u8, tag: u16) {
        self.put(&(len as u32).to_le_bytes());
        self.put(&[kind]);
        self.put(&tag.to_le_bytes());
    }

    pub fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }

    pub fn u16(&mut self, v: u16) {
        self.put(&v.to_le_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }

    pub fn string(&mut self, s: &[u8]) {
        self.u16(s.len() as u16);
        self.put(s);
    }
}
