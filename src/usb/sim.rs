//! An in-memory usb9pfs gadget: the board end of a [`UsbPipe`] with the bulk
//! semantics of real USB (packets of `max_packet` bytes, transfers ended by a
//! short packet or a ZLP, a board receive request of `buflen` bytes).
//!
//! Tests drive workers and the transfer rules with it; it is also the seed of
//! the hostile-board simulator (raw, malformed transfers via
//! [`Board::send_raw`]). It must never be used on a real data path.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::usb::pipe::{StopSwitch, TransferMem, UsbError, UsbPipe};

/// How long a test waits for the forwarder before declaring it stuck. A
/// bound against hangs, not a synchronisation point.
const STUCK: Duration = Duration::from_secs(20);

/// Creates a connected pair: the host end (give it to a worker) and the board.
pub fn gadget(max_packet: usize, buflen: u32) -> (HostEnd, Board) {
    let (in_tx, in_rx) = channel::<Packet>();
    let stop = stop_switch(&in_tx);
    let (out_tx, out_rx) = channel();
    let shared = Arc::new(Shared {
        taken: Mutex::new(0),
        taken_cv: Condvar::new(),
        alive: AtomicBool::new(true),
        empty_receives: AtomicUsize::new(0),
        rx: Mutex::new(Vec::new()),
        mem: Mutex::new(MemState::default()),
        off: AtomicBool::new(false),
        rearm_fails: AtomicBool::new(false),
        rearms: AtomicUsize::new(0),
        needless_rearms: AtomicUsize::new(0),
    });
    let host = HostEnd {
        mps: max_packet,
        buflen: buflen as usize,
        packets: in_rx,
        pending: VecDeque::new(),
        delivered: out_tx,
        shared: shared.clone(),
        stray_zlps: 0,
        reads: 0,
        stop,
        canceller_tx: in_tx.clone(),
        unplug_seen: false,
        partial_wait: crate::usb::pipe::PARTIAL_FRAME_WAIT,
    };
    let board = Board { mps: max_packet, packets: in_tx, received: out_rx, shared };
    (host, board)
}

/// What travels board → host: a packet, or the mark a cancelled IN
/// transfer leaves (what a discarded URB is for real hardware).
enum Packet {
    Data(Vec<u8>),
    Cancel,
    /// The board was dropped (the host end keeps a sender for cancels, so
    /// the channel itself never closes).
    Unplugged,
    /// The board's function disabled its endpoints (umount on a board
    /// kernel with the 2026 usbg fixes): the host's IN transfer fails, and
    /// so does every one after it until the host re-arms.
    Off,
}

/// A stop switch whose cancel leaves its mark in the packet stream.
fn stop_switch(tx: &Sender<Packet>) -> Arc<StopSwitch> {
    let stop = Arc::new(StopSwitch::default());
    let canceller = Mutex::new(tx.clone());
    stop.set_canceller(Some(Box::new(move || {
        if let Ok(tx) = canceller.lock() {
            let _ = tx.send(Packet::Cancel);
        }
    })));
    stop
}

struct Shared {
    /// Packets the host end has taken, for tests that must act mid-transfer.
    taken: Mutex<usize>,
    taken_cv: Condvar,
    alive: AtomicBool,
    empty_receives: AtomicUsize,
    /// The board's receive request being filled.
    rx: Mutex<Vec<u8>>,
    /// In-place transfer memory, as usbfs's mappings: what is offered and
    /// live, and which transfers used it.
    mem: Mutex<MemState>,
    /// The function's endpoints are disabled (after [`Packet::Off`]).
    off: AtomicBool,
    /// A broken board: re-arming does not enable its function.
    rearm_fails: AtomicBool,
    /// SET_INTERFACEs the host sent, and those it sent to a function whose
    /// endpoints were enabled (which would reset a live session).
    rearms: AtomicUsize,
    needless_rearms: AtomicUsize,
}

#[derive(Default)]
struct MemState {
    /// Bytes of in-place memory the host end may have live at once (as
    /// usbfs_memory_mb); None: it offers none, like a pipe without it.
    limit: Option<usize>,
    /// Live regions: (address, length).
    live: Vec<(usize, usize)>,
    in_place: usize,
    copied: usize,
}

impl MemState {
    /// Counts one transfer of `len` bytes at `at`.
    fn count(&mut self, at: usize, len: usize) {
        if len == 0 {
            return;
        }
        if self.live.iter().any(|&(a, l)| at >= a && at + len <= a + l) {
            self.in_place += 1;
        } else {
            self.copied += 1;
        }
    }
}

/// In-place memory of the simulated host end; forgets its region on drop.
struct SimMem {
    bytes: Vec<u8>,
    shared: Arc<Shared>,
}

impl std::ops::Deref for SimMem {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl std::ops::DerefMut for SimMem {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl Drop for SimMem {
    fn drop(&mut self) {
        let at = self.bytes.as_ptr() as usize;
        if let Ok(mut m) = self.shared.mem.lock() {
            m.live.retain(|&(a, _)| a != at);
        }
    }
}

/// The host side: what `device.rs` is for real hardware.
pub struct HostEnd {
    mps: usize,
    buflen: usize,
    packets: Receiver<Packet>,
    pending: VecDeque<Vec<u8>>,
    delivered: Sender<Vec<u8>>,
    shared: Arc<Shared>,
    stray_zlps: usize,
    /// IN transfers asked for (read_transfer calls).
    reads: usize,
    stop: Arc<StopSwitch>,
    canceller_tx: Sender<Packet>,
    unplug_seen: bool,
    partial_wait: Duration,
}

impl HostEnd {
    /// IN transfers the host asked for so far.
    pub fn reads(&self) -> usize {
        self.reads
    }

    /// Host reads that completed with zero bytes (a ZLP outside its transfer).
    pub fn stray_zlps(&self) -> usize {
        self.stray_zlps
    }

    /// The switch that stops this end's worker at a message boundary.
    pub fn stop_switch(&self) -> Arc<StopSwitch> {
        self.stop.clone()
    }

    /// A fresh switch, as a successor's newly opened device would have.
    pub fn renew_stop_switch(&mut self) -> Arc<StopSwitch> {
        self.stop.set_canceller(None);
        self.stop = stop_switch(&self.canceller_tx);
        self.stop.clone()
    }

    /// Offers in-place transfer memory (as usbfs's mappings), at most
    /// `limit` bytes live at once.
    pub fn offer_transfer_mem(&mut self, limit: usize) {
        if let Ok(mut m) = self.shared.mem.lock() {
            m.limit = Some(limit);
        }
    }

    /// How long the rest of a begun message may take (tests shorten it).
    pub fn set_partial_wait(&mut self, wait: Duration) {
        self.partial_wait = wait;
    }

    fn next_packet(&mut self, bounded: bool) -> Result<Packet, UsbError> {
        if let Some(p) = self.pending.pop_front() {
            return Ok(Packet::Data(p));
        }
        if self.unplug_seen {
            return Err(UsbError::Gone);
        }
        let next = if bounded {
            match self.packets.recv_timeout(self.partial_wait) {
                Err(RecvTimeoutError::Timeout) => return Err(UsbError::PartialFrame),
                r => r.map_err(|_| std::sync::mpsc::RecvError),
            }
        } else {
            self.packets.recv()
        };
        match next {
            Ok(Packet::Unplugged) | Err(_) => {
                self.unplug_seen = true;
                Err(UsbError::Gone)
            }
            Ok(p) => Ok(p),
        }
    }
}

impl UsbPipe for HostEnd {
    fn max_packet_size(&self) -> usize {
        self.mps
    }

    fn read_transfer(&mut self, buf: &mut [u8], at_boundary: bool) -> Result<usize, UsbError> {
        self.reads += 1;
        if let Ok(mut m) = self.shared.mem.lock() {
            m.count(buf.as_ptr() as usize, buf.len());
        }
        if self.shared.off.load(Ordering::SeqCst) {
            // As dummy_hcd: a transfer to a disabled endpoint fails at once.
            return Err(off_error(at_boundary, 0));
        }
        // As device.rs: arm, "submit", then honour a request that came first.
        self.stop.arm(at_boundary);
        if at_boundary && self.stop.requested() {
            self.stop.arm(false);
            return Err(UsbError::Stopped);
        }
        let mut got = 0;
        loop {
            let p = match self.next_packet(!at_boundary) {
                Ok(Packet::Data(p)) => {
                    if let Ok(mut n) = self.shared.taken.lock() {
                        *n += 1;
                        self.shared.taken_cv.notify_all();
                    }
                    p
                }
                // As device.rs: a nudge (no stop requested) that finds
                // nothing keeps waiting.
                Ok(Packet::Cancel) if at_boundary && got == 0 && !self.stop.requested() => continue,
                Ok(Packet::Cancel) if at_boundary => {
                    self.stop.arm(false);
                    return if got == 0 { Err(UsbError::Stopped) } else { Ok(got) };
                }
                Ok(Packet::Cancel) => continue, // a cancel that missed its transfer
                Ok(Packet::Off) => {
                    self.shared.off.store(true, Ordering::SeqCst);
                    self.stop.arm(false);
                    return Err(off_error(at_boundary, got));
                }
                Err(UsbError::PartialFrame) => return Err(UsbError::PartialFrame),
                Ok(Packet::Unplugged) | Err(_) => {
                    self.stop.arm(false);
                    return Err(UsbError::Gone);
                }
            };
            if p.len() > buf.len() - got {
                return Err(UsbError::Overflow(buf.len()));
            }
            buf[got..got + p.len()].copy_from_slice(&p);
            got += p.len();
            if p.len() < self.mps || got == buf.len() {
                if got == 0 {
                    self.stray_zlps += 1;
                }
                self.stop.arm(false);
                return Ok(got);
            }
        }
    }

    fn write_transfer(&mut self, data: &[u8], zlp: bool) -> Result<(), UsbError> {
        if !self.shared.alive.load(Ordering::SeqCst) {
            return Err(UsbError::Gone);
        }
        if let Ok(mut m) = self.shared.mem.lock() {
            m.count(data.as_ptr() as usize, data.len());
        }
        let mut packets: Vec<&[u8]> = data.chunks(self.mps).collect();
        if packets.is_empty() || zlp {
            packets.push(&[]);
        }
        let mut rx = self.shared.rx.lock().map_err(|_| UsbError::Gone)?;
        for p in packets {
            rx.extend_from_slice(p);
            if p.len() < self.mps || rx.len() >= self.buflen {
                if rx.is_empty() {
                    self.shared.empty_receives.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let msg = std::mem::take(&mut *rx);
                self.delivered.send(msg).map_err(|_| UsbError::Gone)?;
            }
        }
        Ok(())
    }

    fn rearm(&mut self) -> Result<(), UsbError> {
        self.shared.rearms.fetch_add(1, Ordering::SeqCst);
        if !self.shared.off.load(Ordering::SeqCst) {
            self.shared.needless_rearms.fetch_add(1, Ordering::SeqCst);
        }
        if !self.shared.rearm_fails.load(Ordering::SeqCst) {
            self.shared.off.store(false, Ordering::SeqCst);
        }
        Ok(())
    }

    fn transfer_mem(&mut self, len: usize) -> Option<TransferMem> {
        let mut m = self.shared.mem.lock().ok()?;
        let used: usize = m.live.iter().map(|&(_, l)| l).sum();
        if used + len > m.limit? {
            return None;
        }
        let bytes = vec![0u8; len];
        m.live.push((bytes.as_ptr() as usize, len));
        Some(TransferMem::new(SimMem { bytes, shared: self.shared.clone() }))
    }
}

/// What a transfer to a disabled function ends with, as device.rs reports it.
fn off_error(at_boundary: bool, got: usize) -> UsbError {
    if at_boundary && got == 0 {
        UsbError::FunctionOff("Protocol error (simulated)".into())
    } else {
        UsbError::Transfer("transfer ended with Protocol error (simulated)".into())
    }
}

/// The board side: sends T-messages the way trans_usbg.c does and collects
/// what its receive requests completed with. Dropping it unplugs the board.
pub struct Board {
    mps: usize,
    packets: Sender<Packet>,
    received: Receiver<Vec<u8>>,
    shared: Arc<Shared>,
}

impl Board {
    /// One T-message as the kernel sends it: one transfer, ZLP if needed.
    pub fn send(&self, msg: &[u8]) {
        self.send_raw(msg);
        if msg.len() % self.mps == 0 {
            self.send_zlp();
        }
    }

    /// Raw packets with no ZLP logic (for malformed or split transfers).
    pub fn send_raw(&self, bytes: &[u8]) {
        for p in bytes.chunks(self.mps) {
            let _ = self.packets.send(Packet::Data(p.to_vec()));
        }
    }

    pub fn send_zlp(&self) {
        let _ = self.packets.send(Packet::Data(Vec::new()));
    }

    /// The next completed receive request; panics if none comes in time.
    pub fn recv(&self) -> Vec<u8> {
        match self.received.recv_timeout(STUCK) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => panic!("board got no reply within {STUCK:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("forwarder went away"),
        }
    }

    /// Waits until the host end has taken `n` packets in all (a bound
    /// against hangs, not a sleep: it returns as soon as they are taken).
    pub fn wait_taken(&self, n: usize) {
        let guard = self.shared.taken.lock().unwrap_or_else(|p| p.into_inner());
        let (_taken, timeout) = self.shared.taken_cv.wait_timeout_while(guard, STUCK, |t| *t < n).unwrap_or_else(|p| p.into_inner());
        assert!(!timeout.timed_out(), "the host took fewer than {n} packets within {STUCK:?}");
    }

    /// Transfers the host end made in its in-place memory, and elsewhere
    /// (copied, for a real device).
    pub fn transfers_in_place_and_copied(&self) -> (usize, usize) {
        self.shared.mem.lock().map(|m| (m.in_place, m.copied)).unwrap_or((0, 0))
    }

    /// Unmounts the way board kernels with the 2026 usbg fixes do: the
    /// function disables its endpoints until the host re-selects the
    /// interface. (A board that never calls this keeps its endpoints, as
    /// older kernels do.)
    pub fn unmount_disabling(&self) {
        let _ = self.packets.send(Packet::Off);
    }

    /// Makes re-arming fail to enable the function (a broken board).
    pub fn set_rearm_fails(&self, fails: bool) {
        self.shared.rearm_fails.store(fails, Ordering::SeqCst);
    }

    /// SET_INTERFACEs the host sent: all, and those to an enabled function.
    pub fn rearms(&self) -> (usize, usize) {
        (self.shared.rearms.load(Ordering::SeqCst), self.shared.needless_rearms.load(Ordering::SeqCst))
    }

    /// Receive requests that completed empty: a ZLP that leaked past its message.
    pub fn empty_receives(&self) -> usize {
        self.shared.empty_receives.load(Ordering::SeqCst)
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        self.shared.alive.store(false, Ordering::SeqCst);
        let _ = self.packets.send(Packet::Unplugged);
    }
}
