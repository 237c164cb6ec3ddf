//! What every fuzz target shares: a global allocator that turns "an
//! allocation driven by a size the input declared" into a crash libFuzzer
//! records, and a way to tighten that bound around the code under test.
//!
//! Linking this crate installs [`Bounded`] as the global allocator. Every
//! single allocation larger than [`HARD_LIMIT`] aborts the process; inside
//! [`budget`] the bound is lower still (0 for the hot-path modules, which
//! must not allocate per message at all). libFuzzer's own `-malloc_limit_mb`
//! needs a sanitizer's malloc hooks, which a stable toolchain does not have;
//! this check needs none. It must never allocate itself (it runs inside the
//! allocator) and never be linked into the daemon.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicUsize, Ordering};

/// No single allocation in any target may exceed this: above the largest
/// buffer a target sets up legitimately (one request of
/// `pipe::request_len(1 MiB, 1024)` bytes, allocated once per process, like
/// the worker's buffers), far below what a declared size of up to 2^32-1
/// would ask for.
pub const HARD_LIMIT: usize = 2 << 20;

/// The largest frame ceiling the targets use: the daemon's default
/// `max_frame`, so the buffers stay under [`HARD_LIMIT`].
pub const MAX_CEILING: u32 = usb9pfsd::config::DEFAULT_MAX_FRAME;

static LIMIT: AtomicUsize = AtomicUsize::new(HARD_LIMIT);

/// The system allocator with a per-allocation size bound.
pub struct Bounded;

#[global_allocator]
static ALLOC: Bounded = Bounded;

unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

fn check(size: usize) {
    let limit = LIMIT.load(Ordering::Relaxed);
    // A panic under a tight budget must be reported as the panic it is: the
    // hook formats its message (and maybe a backtrace) on the heap.
    if size > limit && !std::thread::panicking() {
        let mut line = StackLine::new();
        let _ = writeln!(
            line,
            "usb9pfsd-fuzz: allocation of {size} bytes exceeds the bound of {limit} bytes (an allocation driven by a declared size?)"
        );
        line.to_stderr();
        // libFuzzer's SIGABRT handler saves the input as crash-<sha1>.
        std::process::abort();
    }
}

/// Runs `f` with every single allocation bounded by `limit` bytes (0: no
/// allocation at all), then restores the bound. Only deallocations are free.
pub fn budget<R>(limit: usize, f: impl FnOnce() -> R) -> R {
    let before = LIMIT.swap(limit.min(HARD_LIMIT), Ordering::Relaxed);
    let r = f();
    LIMIT.store(before, Ordering::Relaxed);
    r
}

/// A line formatted on the stack, for messages that must not allocate.
pub struct StackLine {
    buf: [u8; 256],
    len: usize,
}

impl StackLine {
    pub fn new() -> StackLine {
        StackLine { buf: [0; 256], len: 0 }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn to_stderr(&self) {
        // SAFETY: writes initialised bytes from a live buffer to fd 2.
        unsafe { libc::write(2, self.buf.as_ptr().cast(), self.len) };
    }
}

impl Default for StackLine {
    fn default() -> Self {
        StackLine::new()
    }
}

impl fmt::Write for StackLine {
    /// Keeps what fits and fails after that, like a full buffer should.
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// Reads the input front to back; every read past the end yields zeros, so
/// any byte string is a valid encoding.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        let b = self.data.first().copied().unwrap_or(0);
        self.data = self.data.get(1..).unwrap_or(&[]);
        b
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.data.len())
    }
}
