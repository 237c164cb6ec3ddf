//! The board's pair of bulk endpoints as a worker sees them, and the
//! transfer rules that turn 9P messages into USB transfers and back.
//!
//! [`UsbPipe`] is the seam between real hardware (`device.rs`) and the
//! in-memory gadget tests use (`sim.rs`). The rules here come from the board's
//! kernel transport (net/9p/trans_usbg.c):
//! - the board sends each T-message as one IN transfer and ends it with a
//!   zero-length packet (ZLP) when its size is a multiple of the packet size;
//! - the board receives each R-message into one request of `buflen` bytes that
//!   completes on a short packet, a ZLP, or when full — so the host ends a
//!   packet-multiple R-message with a ZLP, except when the message fills the
//!   whole `buflen` (a ZLP would then land in the board's *next* request).
//!
//! A worker is stopped (reload, hand-over to a re-executed daemon) only at a
//! message boundary: [`StopSwitch::request`] cancels an IN transfer that waits
//! for the *first* bytes of a T-message; one that already holds part of a
//! frame is finished, exchanged and answered first, so a board is never left
//! owing or owed a message.
//!
//! This module must never allocate per message and never decide policy
//! (which backend, retries): it only moves bytes and validates sizes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::ninep::frame::{self, FrameError};

/// One claimed usb9pfs interface: a bulk IN and a bulk OUT endpoint.
pub trait UsbPipe: Send {
    /// wMaxPacketSize of the endpoints (512 at high speed, 1024 at super speed).
    fn max_packet_size(&self) -> usize;
    /// One bulk IN transfer into `buf`. Blocks until the board ends the
    /// transfer (short packet, ZLP, or `buf` full) or goes away. With
    /// `at_boundary` (nothing of the next T-message read yet) a stop request
    /// cancels it: [`UsbError::Stopped`] if no byte had arrived, else the
    /// bytes that did (the caller then reads the rest of the frame). Without
    /// `at_boundary` (the rest of a message) it gives up after
    /// [`PARTIAL_FRAME_WAIT`] with [`UsbError::PartialFrame`].
    fn read_transfer(&mut self, buf: &mut [u8], at_boundary: bool) -> Result<usize, UsbError>;
    /// One bulk OUT transfer of exactly `data`, ended by a zero-length packet
    /// when `zlp` is set (an empty `data` with `zlp` is a lone ZLP).
    fn write_transfer(&mut self, data: &[u8], zlp: bool) -> Result<(), UsbError>;
    /// At least `len` bytes of memory this pipe moves transfers in and out
    /// of in place, or None if it has none (then transfers from and to any
    /// other buffer are copied, as always). Asked for once per session,
    /// never per message.
    fn transfer_mem(&mut self, _len: usize) -> Option<TransferMem> {
        None
    }
    /// Makes the board's usb9pfs function usable again after it disabled
    /// its endpoints ([`UsbError::FunctionOff`]): re-selects the interface's
    /// usb9pfs alternate setting (SET_INTERFACE, which the board's kernel
    /// answers by enabling its endpoints and requests again) and clears the
    /// endpoints' halts. Only the holder of the interface claim can send it.
    /// Never called on a live session: a board kernel that keeps its
    /// endpoints enabled would reset its transfers (and leak its requests).
    fn rearm(&mut self) -> Result<(), UsbError> {
        Err(UsbError::Transfer("this pipe cannot re-select its alternate setting".into()))
    }
}

/// Memory a pipe moves transfer data in and out of in place: for a real
/// device, usbfs's mmap'd buffers — no copy between the daemon and the
/// kernel and no kernel allocation per transfer. Released on drop.
pub struct TransferMem(Box<dyn std::ops::DerefMut<Target = [u8]> + Send>);

impl TransferMem {
    pub fn new(mem: impl std::ops::DerefMut<Target = [u8]> + Send + 'static) -> TransferMem {
        TransferMem(Box::new(mem))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn bytes(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

/// Asks one worker to stop at its next message boundary. Shared between the
/// supervisor (which requests) and the worker's pipe (which registers how to
/// cancel its pending IN transfer, once, and arms it only while that transfer
/// waits at a boundary).
#[derive(Default)]
pub struct StopSwitch {
    requested: AtomicBool,
    cancel: Mutex<Canceller>,
    /// Wakes [`StopSwitch::pause`] on a request.
    woken: std::sync::Condvar,
}

#[derive(Default)]
struct Canceller {
    armed: bool,
    cancel: Option<Box<dyn Fn() + Send>>,
}

impl StopSwitch {
    /// Requests the stop; cancels the pending IN transfer if it waits at a
    /// boundary. Idempotent.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.nudge();
        // Under the lock pause() checks the flag with, so no wake is lost.
        let _c = lock(&self.cancel);
        self.woken.notify_all();
    }

    /// Waits `d` unless a stop is (or gets) requested; true if it was. For
    /// the one wait that has no event to block on: a board that refuses its
    /// alternate setting until it mounts is asked again once a second.
    pub fn pause(&self, d: std::time::Duration) -> bool {
        let c = lock(&self.cancel);
        let (_c, _) = self.woken.wait_timeout_while(c, d, |_| !self.requested()).unwrap_or_else(|p| p.into_inner());
        self.requested()
    }

    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Cancels the IN transfer waiting at a boundary *without* a stop: the
    /// pipe waits again if nothing had arrived, or goes on with what had —
    /// the bytes of a message the board began but never ended with a short
    /// packet (it stopped inside a run of full packets), whose rest is then
    /// bounded by [`PARTIAL_FRAME_WAIT`]. The supervisor nudges every
    /// worker every [`NUDGE_EVERY`]; an idle board costs one cancel and one
    /// resubmission per nudge, a busy one nothing.
    pub fn nudge(&self) {
        let c = lock(&self.cancel);
        if let (true, Some(cancel)) = (c.armed, &c.cancel) {
            cancel();
        }
    }

    /// The pipe's way to cancel its IN transfer (set once when the pipe is
    /// made, cleared before the transfer is freed).
    pub fn set_canceller(&self, cancel: Option<Box<dyn Fn() + Send>>) {
        let mut c = lock(&self.cancel);
        c.armed = false;
        c.cancel = cancel;
    }

    /// Arms the canceller for a transfer about to be submitted at a boundary
    /// (or disarms it). After submitting an armed transfer the pipe must
    /// check [`requested`](Self::requested) and cancel it itself if set:
    /// then a request can never fall between the two.
    pub fn arm(&self, armed: bool) {
        lock(&self.cancel).armed = armed;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What can go wrong on the USB side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsbError {
    #[error("board disconnected")]
    Gone,
    #[error("stopped at a message boundary")]
    Stopped,
    #[error("board sent more than the {0}-byte transfer could hold")]
    Overflow(usize),
    #[error("endpoint stalled")]
    Stall,
    #[error("the board sent part of a 9P message and nothing more for {} s", partial_frame_wait().as_secs())]
    PartialFrame,
    #[error("USB transfer failed: {0}")]
    Transfer(String),
    /// The IN transfer waiting for the first byte of the next T-message
    /// failed with an endpoint error while the device stayed on the bus:
    /// the board's usb9pfs function disabled its endpoints, which board
    /// kernels with the 2026 usbg fixes (Debian 6.12.118 and later) do at
    /// every umount, until the host selects the interface again
    /// ([`UsbPipe::rearm`]). Carries the transfer's error.
    #[error("the board's usb9pfs function stopped between messages ({0})")]
    FunctionOff(String),
}

/// How often a board that refuses its alternate setting (a gadget that
/// enables its endpoints only once its 9P client is ready, as the posted
/// usbg series does) is asked again: what that series' own p9_fwd.py does.
pub const NOT_READY_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Receiving a T-message failed either on the wire or in its framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    #[error(transparent)]
    Usb(#[from] UsbError),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Bytes to request for one IN transfer so that a frame of exactly
/// `ceiling` bytes still ends (with its ZLP) inside the transfer: strictly
/// more than the ceiling, rounded up to whole packets.
pub fn request_len(ceiling: u32, max_packet: usize) -> usize {
    let mps = max_packet.max(1);
    (ceiling as usize + 1).div_ceil(mps) * mps
}

/// The IN request for the frames of a board whose ceiling is at most this
/// (the kernel's default `buflen`): one 16 KiB request, the longest that
/// usbfs makes without a scatter-gather URB. A frame of exactly 16 KiB
/// leaves its ZLP for the next read, which skips it.
pub const IN_CHUNK: usize = 16384;

/// The longest single IN request: a whole frame of a board that raised its
/// `buflen` to 64 KiB, with room for its ZLP at either packet size — one
/// transfer per T-message (a Twrite of 64 KiB would otherwise take four, and
/// three of them a poll(2) each for their bound). Larger requests are never
/// made: a first read of 1 MiB (the default `max_frame` before Tversion) took
/// usbfs's scatter-gather path on dummy_hcd and corrupted its URB list after
/// a re-enumeration; boards above 64 KiB get their frames joined from
/// [`IN_CHUNK`] reads, as before.
pub const IN_CHUNK_MAX: usize = 65536 + 1024;

/// How much one IN transfer asks for under `ceiling`: the whole frame (and
/// its ZLP) when that fits in [`IN_CHUNK_MAX`] and the board raised its
/// buflen above [`IN_CHUNK`]; otherwise [`IN_CHUNK`].
pub fn in_chunk(ceiling: u32, max_packet: usize) -> usize {
    let whole = request_len(ceiling, max_packet);
    if ceiling as usize <= IN_CHUNK || whole > IN_CHUNK_MAX {
        IN_CHUNK
    } else {
        whole
    }
}

/// How long the rest of a T-message may take once its first bytes arrived.
/// The board's kernel sends a message as one transfer, so its rest follows
/// within milliseconds; a board that stops mid-message is broken, and its
/// worker ends (and is restarted) instead of waiting forever. The wait for a
/// message's *first* byte has no limit: boards idle for hours.
pub const PARTIAL_FRAME_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How often the supervisor nudges each worker's wait for a message
/// ([`StopSwitch::nudge`]): a message begun and never ended with a short
/// packet is noticed within this, and then ends after [`PARTIAL_FRAME_WAIT`].
pub const NUDGE_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// The waits in force: [`PARTIAL_FRAME_WAIT`] and [`NUDGE_EVERY`], unless
/// [`shorten_waits_for_tests`] shortened them when the daemon started.
static PARTIAL_WAIT_S: AtomicU64 = AtomicU64::new(PARTIAL_FRAME_WAIT.as_secs());
static NUDGE_EVERY_S: AtomicU64 = AtomicU64::new(NUDGE_EVERY.as_secs());

/// How long the rest of a begun T-message may take ([`PARTIAL_FRAME_WAIT`]
/// unless shortened for a test).
pub fn partial_frame_wait() -> std::time::Duration {
    std::time::Duration::from_secs(PARTIAL_WAIT_S.load(Ordering::Relaxed))
}

/// How often the supervisor nudges the workers ([`NUDGE_EVERY`] unless
/// shortened for a test).
pub fn nudge_every() -> std::time::Duration {
    std::time::Duration::from_secs(NUDGE_EVERY_S.load(Ordering::Relaxed))
}

/// Shortens the two waits for the whole process, once, before any worker
/// starts: only for the VM rig (the config's `[daemon] test_partial_frame_wait`
/// and `test_nudge_every`, see `config.rs`), whose fault scenario would
/// otherwise spend minutes in them. Never lengthens them, and unit tests
/// never call it (the waits are process-wide).
pub fn shorten_waits_for_tests(partial: Option<std::time::Duration>, nudge: Option<std::time::Duration>) {
    if let Some(d) = partial {
        PARTIAL_WAIT_S.store(d.as_secs().clamp(1, PARTIAL_FRAME_WAIT.as_secs()), Ordering::Relaxed);
    }
    if let Some(d) = nudge {
        NUDGE_EVERY_S.store(d.as_secs().clamp(1, NUDGE_EVERY.as_secs()), Ordering::Relaxed);
    }
}

/// Empty transfers tolerated before a T-message: the board sends a ZLP only
/// after a packet-multiple message, so a few strays can follow a transfer the
/// host ended early; thousands in a row are a broken board.
pub const MAX_STRAY_ZLPS: u32 = 64;

/// Receives one T-message from the board into `buf` and returns its length.
///
/// `buf` must be at least `request_len(ceiling, mps)` long. Stray ZLPs are
/// skipped (at most [`MAX_STRAY_ZLPS`] in a row); a message the board split
/// over several transfers (or one longer than [`in_chunk`]) is joined; the
/// declared size is checked against `ceiling` before more is read. A stop
/// request ends the wait only while no byte of the message has arrived; a
/// message whose rest never comes ends in [`FrameError::Unfinished`], which
/// says how much of it did.
pub fn recv_message<P: UsbPipe + ?Sized>(pipe: &mut P, buf: &mut [u8], ceiling: u32) -> Result<usize, RecvError> {
    let want = request_len(ceiling, pipe.max_packet_size()).min(buf.len());
    let chunk = in_chunk(ceiling, pipe.max_packet_size());
    let mut got = 0;
    let mut zlps = 0;
    let read = |pipe: &mut P, buf: &mut [u8], got: usize, declared: Option<u32>| {
        let end = (got + chunk).min(want);
        pipe.read_transfer(&mut buf[got..end], got == 0).map_err(|e| match e {
            // The rest of a begun message never came: say how much did.
            UsbError::PartialFrame => RecvError::Frame(FrameError::Unfinished { got, declared, waited_s: partial_frame_wait().as_secs() }),
            e => RecvError::Usb(e),
        })
    };
    let size = loop {
        let n = read(pipe, buf, got, None)?;
        if n == 0 {
            zlps += 1;
            if zlps > MAX_STRAY_ZLPS {
                return Err(FrameError::StrayZlps { count: zlps }.into());
            }
        }
        got += n;
        if let Some(size) = frame::peek_size(&buf[..got]) {
            break size;
        }
        if got >= want {
            return Err(FrameError::TooSmall { size: got as u32 }.into());
        }
    };
    frame::check_size(size, ceiling)?;
    let size = size as usize;
    while got < size {
        let n = read(pipe, buf, got, Some(size as u32))?;
        if n == 0 {
            return Err(FrameError::LengthMismatch { declared: size as u32, got }.into());
        }
        got += n;
    }
    if got != size {
        return Err(FrameError::LengthMismatch { declared: size as u32, got }.into());
    }
    Ok(size)
}

/// Sends one R-message to the board as one transfer, ended by the ZLP the
/// board's receive request needs when the message is a whole number of
/// packets shorter than its `board_buflen`.
pub fn send_message<P: UsbPipe + ?Sized>(pipe: &mut P, msg: &[u8], board_buflen: u32) -> Result<(), UsbError> {
    let zlp = needs_zlp(msg.len(), pipe.max_packet_size(), board_buflen);
    pipe.write_transfer(msg, zlp)
}

/// True when a message of `len` bytes would leave the board's receive
/// request waiting without a terminating ZLP.
pub fn needs_zlp(len: usize, max_packet: usize, board_buflen: u32) -> bool {
    max_packet > 0 && len % max_packet == 0 && len < board_buflen as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usb::sim::{self, Board};

    fn msg(len: usize, fill: u8) -> Vec<u8> {
        let mut m = vec![fill; len];
        m[..4].copy_from_slice(&(len as u32).to_le_bytes());
        m
    }

    fn pair(buflen: u32) -> (sim::HostEnd, Board) {
        sim::gadget(512, buflen)
    }

    #[test]
    fn a_pause_ends_early_on_a_stop_request_and_not_otherwise() {
        let stop = std::sync::Arc::new(StopSwitch::default());
        assert!(!stop.pause(std::time::Duration::from_millis(10)), "no request: the whole pause");
        let s = stop.clone();
        let t = std::thread::spawn(move || s.pause(std::time::Duration::from_secs(60)));
        stop.request();
        assert!(t.join().expect("join"), "woken by the request long before 60 s");
        assert!(stop.pause(std::time::Duration::from_secs(60)), "a request made before returns at once");
    }

    #[test]
    fn in_requests_are_16k_or_a_whole_frame_up_to_64k() {
        assert_eq!(in_chunk(16384, 512), IN_CHUNK);
        assert_eq!(in_chunk(8192, 512), IN_CHUNK);
        assert_eq!(in_chunk(65536, 512), 66048);
        assert_eq!(in_chunk(65536, 1024), 66560);
        assert_eq!(in_chunk(32768, 512), 33280);
        assert_eq!(in_chunk(1 << 20, 512), IN_CHUNK);
        assert_eq!(in_chunk(65536 + 1024, 1024), IN_CHUNK);
    }

    #[test]
    fn request_is_longer_than_any_legal_frame() {
        assert_eq!(request_len(16384, 512), 16896);
        assert_eq!(request_len(16383, 512), 16384);
        assert_eq!(request_len(7, 512), 512);
        assert_eq!(request_len(8192, 1024), 9216);
    }

    #[test]
    fn t_messages_around_packet_boundaries_arrive_whole() {
        let (mut host, board) = pair(16384);
        let mut buf = vec![0; request_len(16384, 512)];
        for k in 1..=32usize {
            for len in [k * 512 - 1, k * 512, k * 512 + 1] {
                if len >= 16384 {
                    continue;
                }
                let m = msg(len, k as u8);
                board.send(&m);
                let n = recv_message(&mut host, &mut buf, 16384).expect("recv");
                assert_eq!(&buf[..n], &m[..], "len {len}");
            }
        }
        // Every ZLP the board sent was consumed inside its own transfer,
        // except the one after a frame that filled a whole IN_CHUNK read.
        assert_eq!(host.stray_zlps(), 0);
        board.send(&msg(16384, 1));
        assert_eq!(recv_message(&mut host, &mut buf, 16384), Ok(16384));
        let m = msg(100, 2);
        board.send(&m);
        assert_eq!(recv_message(&mut host, &mut buf, 16384), Ok(100));
        assert_eq!(&buf[..100], &m[..]);
        assert_eq!(host.stray_zlps(), 1);
    }

    #[test]
    fn frames_up_to_64k_arrive_in_one_transfer_and_longer_ones_are_joined() {
        let (mut host, board) = pair(1 << 20);
        let mut buf = vec![0; request_len(1 << 20, 512)];
        // A board that negotiated msize 65536: one IN transfer per frame,
        // whatever its length, its ZLP included.
        for len in [IN_CHUNK + 1, 2 * IN_CHUNK, 40000, 65536] {
            let m = msg(len, (len % 251) as u8);
            board.send(&m);
            let before = host.reads();
            assert_eq!(recv_message(&mut host, &mut buf, 65536), Ok(len), "len {len}");
            assert_eq!(&buf[..len], &m[..]);
            assert_eq!(host.reads() - before, 1, "len {len}: one transfer");
        }
        assert_eq!(host.stray_zlps(), 0);
        // Before Tversion (ceiling max_frame) or above 64 KiB: joined from
        // 16 KiB transfers (not counting the ZLP a frame of whole chunks
        // leaves for the next read).
        for len in [IN_CHUNK + 1, 65536, 100_000] {
            let m = msg(len, (len % 251) as u8);
            board.send(&m);
            let before = host.reads() - host.stray_zlps();
            assert_eq!(recv_message(&mut host, &mut buf, 1 << 20), Ok(len), "len {len}");
            assert_eq!(&buf[..len], &m[..]);
            assert_eq!(host.reads() - host.stray_zlps() - before, len.div_ceil(IN_CHUNK), "len {len}");
        }
    }

    #[test]
    fn largest_legal_message_is_accepted_and_one_more_byte_is_not() {
        let (mut host, board) = pair(16384);
        let mut buf = vec![0; request_len(16384, 512)];
        let m = msg(16384, 9);
        board.send(&m);
        assert_eq!(recv_message(&mut host, &mut buf, 16384), Ok(16384));
        board.send(&msg(16385, 9));
        assert_eq!(recv_message(&mut host, &mut buf, 16384), Err(RecvError::Frame(FrameError::TooLarge { size: 16385, ceiling: 16384 })));
    }

    #[test]
    fn malformed_sizes_are_refused() {
        let mut buf = vec![0; request_len(8192, 512)];
        for declared in [0u32, 3, 6, 8193, u32::MAX] {
            let (mut host, board) = pair(16384);
            let mut m = msg(64, 1);
            m[..4].copy_from_slice(&declared.to_le_bytes());
            board.send(&m);
            assert!(matches!(recv_message(&mut host, &mut buf, 8192), Err(RecvError::Frame(_))), "declared {declared}");
        }
        // Declares more than the board then sends: a length mismatch, not a hang.
        let (mut host, board) = pair(16384);
        let mut m = msg(64, 1);
        m[..4].copy_from_slice(&100u32.to_le_bytes());
        board.send(&m);
        board.send_zlp();
        assert_eq!(recv_message(&mut host, &mut buf, 8192), Err(RecvError::Frame(FrameError::LengthMismatch { declared: 100, got: 64 })));
        // Declares less than the transfer carried.
        let (mut host, board) = pair(16384);
        let mut m = msg(64, 1);
        m[..4].copy_from_slice(&20u32.to_le_bytes());
        board.send(&m);
        assert_eq!(recv_message(&mut host, &mut buf, 8192), Err(RecvError::Frame(FrameError::LengthMismatch { declared: 20, got: 64 })));
    }

    #[test]
    fn split_message_is_joined_and_stray_zlp_skipped() {
        let (mut host, board) = pair(16384);
        let mut buf = vec![0; request_len(8192, 512)];
        let m = msg(700, 3);
        board.send_zlp();
        board.send_raw(&m[..2]);
        board.send_raw(&m[2..]);
        assert_eq!(recv_message(&mut host, &mut buf, 8192), Ok(700));
        assert_eq!(&buf[..700], &m[..]);
    }

    #[test]
    fn r_messages_reach_the_board_whole_at_every_boundary() {
        let buflen = 16384;
        let (mut host, board) = pair(buflen);
        for k in 1..=32usize {
            for len in [k * 512 - 1, k * 512, k * 512 + 1] {
                if len > buflen as usize {
                    continue;
                }
                let m = msg(len, k as u8);
                send_message(&mut host, &m, buflen).expect("send");
                assert_eq!(board.recv(), m, "len {len}");
            }
        }
        // The board never saw an empty completion (a ZLP in its next request).
        assert_eq!(board.empty_receives(), 0);
    }

    #[test]
    fn zlp_rule_holds_around_every_buflen_and_msize_edge() {
        // (the board's real receive size, the configured buflen, the board's
        // Tversion msize): the session uses max(configured, msize), which is
        // the real size whenever the board mounts with msize = buflen (the
        // default) or the config names its buflen.
        for (real, configured, msize) in
            [(65536u32, 16384u32, 65536u32), (65536, 65536, 16384), (16384, 16384, 16384), (32768, 16384, 32768)]
        {
            let board_rx = configured.max(msize);
            let (mut host, board) = sim::gadget(512, real);
            for edge in [configured, msize, real] {
                let edge = edge as usize;
                for len in [edge - 512, edge - 1, edge, edge + 1, edge + 512] {
                    if len > msize as usize {
                        continue; // an R-message never exceeds the session's msize
                    }
                    let m = msg(len, (len % 251) as u8);
                    send_message(&mut host, &m, board_rx).expect("send");
                    assert_eq!(board.recv(), m, "len {len} (real {real}, configured {configured}, msize {msize})");
                }
            }
            assert_eq!(board.empty_receives(), 0, "no ZLP leaked into a later request (real {real})");
        }
    }

    #[test]
    fn message_filling_the_whole_buflen_gets_no_zlp() {
        let (mut host, board) = pair(8192);
        let full = msg(8192, 5);
        send_message(&mut host, &full, 8192).expect("send");
        assert_eq!(board.recv(), full);
        let next = msg(100, 6);
        send_message(&mut host, &next, 8192).expect("send");
        assert_eq!(board.recv(), next);
        assert_eq!(board.empty_receives(), 0);
        assert!(!needs_zlp(8192, 512, 8192));
        assert!(needs_zlp(4096, 512, 8192));
        assert!(!needs_zlp(4097, 512, 8192));
    }

    #[test]
    fn a_stop_ends_the_wait_for_the_next_message_only() {
        let (mut host, board) = pair(16384);
        let stop = host.stop_switch();
        let mut buf = vec![0; request_len(16384, 512)];
        // Requested while the loop waits: the IN transfer is cancelled.
        let waiting = std::thread::spawn(move || {
            let r = recv_message(&mut host, &mut buf, 16384);
            (host, buf, r)
        });
        stop.request();
        let (mut host, mut buf, r) = waiting.join().expect("join");
        assert_eq!(r, Err(RecvError::Usb(UsbError::Stopped)));
        // A message that had begun is read to its end first: the board split
        // it, the stop lands between the halves, and the frame still arrives.
        let (mut host2, board2) = pair(16384);
        let stop2 = host2.stop_switch();
        let m = msg(1500, 7);
        board2.send_raw(&m[..512]);
        board2.send_raw(&m[512..1024]);
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0; request_len(16384, 512)];
            let r = recv_message(&mut host2, &mut buf, 16384);
            (r, buf)
        });
        board2.wait_taken(2);
        stop2.request();
        board2.send_raw(&m[1024..]);
        let (r, buf2) = reader.join().expect("join");
        assert_eq!(r, Ok(1500));
        assert_eq!(&buf2[..1500], &m[..]);
        // Requested before the wait even began: nothing is read.
        board.send(&msg(100, 1));
        assert_eq!(recv_message(&mut host, &mut buf, 16384), Err(RecvError::Usb(UsbError::Stopped)));
    }

    #[test]
    fn a_message_stopped_inside_a_run_of_full_packets_ends_after_a_nudge_and_the_bounded_wait() {
        let (mut host, board) = pair(16384);
        host.set_partial_wait(std::time::Duration::from_millis(50));
        let stop = host.stop_switch();
        // A 2000-byte message, of which only two full packets ever come: no
        // short packet ends the transfer, so only a nudge gets the bytes out.
        let m = msg(2000, 3);
        board.send_raw(&m[..1024]);
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0; request_len(16384, 512)];
            let r = recv_message(&mut host, &mut buf, 16384);
            (host, buf, r)
        });
        board.wait_taken(2);
        stop.nudge();
        let (mut host, mut buf, r) = reader.join().expect("join");
        let wait = PARTIAL_FRAME_WAIT.as_secs();
        assert_eq!(r, Err(RecvError::Frame(FrameError::Unfinished { got: 1024, declared: Some(2000), waited_s: wait })));
        assert!(!stop.requested(), "a nudge is not a stop");
        // An idle board nudged keeps waiting, and its next message arrives whole.
        let next = msg(700, 4);
        let reader = std::thread::spawn(move || {
            let r = recv_message(&mut host, &mut buf, 16384);
            (buf, r)
        });
        // The nudge may land before the reader waits (then it is lost, as
        // it would be on a real device) or while it waits (then it waits
        // again): either way the message after it arrives whole.
        stop.nudge();
        board.send(&next);
        let (buf, r) = reader.join().expect("join");
        assert_eq!(r, Ok(700));
        assert_eq!(&buf[..700], &next[..]);
    }

    #[test]
    fn a_message_whose_rest_never_comes_ends_after_a_bounded_wait() {
        // A header, then silence; a size field cut short, then silence. (A
        // board that stops inside a run of full packets: the test above.)
        let wait = PARTIAL_FRAME_WAIT.as_secs();
        for (first, declared) in [(&msg(2000, 1)[..7], Some(2000)), (&msg(2000, 1)[..3], None)] {
            let (mut host, board) = pair(16384);
            host.set_partial_wait(std::time::Duration::from_millis(50));
            let mut buf = vec![0; request_len(16384, 512)];
            board.send_raw(first);
            let unfinished = FrameError::Unfinished { got: first.len(), declared, waited_s: wait };
            assert_eq!(recv_message(&mut host, &mut buf, 16384), Err(RecvError::Frame(unfinished)), "{}", first.len());
            // The wait for a *new* message has no such limit: a complete one
            // after the failure is read normally.
            let m = msg(100, 2);
            board.send(&m);
            assert_eq!(recv_message(&mut host, &mut buf, 16384), Ok(100));
        }
    }

    #[test]
    fn thousands_of_stray_zlps_are_a_broken_board() {
        let (mut host, board) = pair(16384);
        let mut buf = vec![0; request_len(16384, 512)];
        for _ in 0..MAX_STRAY_ZLPS {
            board.send_zlp();
        }
        let m = msg(100, 1);
        board.send(&m);
        assert_eq!(recv_message(&mut host, &mut buf, 16384), Ok(100), "a few strays are skipped");
        for _ in 0..=MAX_STRAY_ZLPS {
            board.send_zlp();
        }
        assert_eq!(recv_message(&mut host, &mut buf, 16384), Err(RecvError::Frame(FrameError::StrayZlps { count: MAX_STRAY_ZLPS + 1 })));
    }

    #[test]
    fn disconnect_is_reported_as_gone() {
        let (mut host, board) = pair(16384);
        drop(board);
        let mut buf = vec![0; 1024];
        assert_eq!(recv_message(&mut host, &mut buf, 512), Err(RecvError::Usb(UsbError::Gone)));
        assert_eq!(host.write_transfer(b"x", false), Err(UsbError::Gone));
    }
}
