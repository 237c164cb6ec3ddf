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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::pipe::{UsbError, UsbPipe};

/// How long a test waits for the forwarder before declaring it stuck. A
/// bound against hangs, not a synchronisation point.
const STUCK: Duration = Duration::from_secs(20);

/// Creates a connected pair: the host end (give it to a worker) and the board.
pub fn gadget(max_packet: usize, buflen: u32) -> (HostEnd, Board) {
    let (in_tx, in_rx) = channel();
    let (out_tx, out_rx) = channel();
    let shared = Arc::new(Shared {
        alive: AtomicBool::new(true),
        empty_receives: AtomicUsize::new(0),
        rx: Mutex::new(Vec::new()),
    });
    let host = HostEnd {
        mps: max_packet,
        buflen: buflen as usize,
        packets: in_rx,
        pending: VecDeque::new(),
        delivered: out_tx,
        shared: shared.clone(),
        stray_zlps: 0,
    };
    let board = Board { mps: max_packet, packets: in_tx, received: out_rx, shared };
    (host, board)
}

struct Shared {
    alive: AtomicBool,
    empty_receives: AtomicUsize,
    /// The board's receive request being filled.
    rx: Mutex<Vec<u8>>,
}

/// The host side: what `device.rs` is for real hardware.
pub struct HostEnd {
    mps: usize,
    buflen: usize,
    packets: Receiver<Vec<u8>>,
    pending: VecDeque<Vec<u8>>,
    delivered: Sender<Vec<u8>>,
    shared: Arc<Shared>,
    stray_zlps: usize,
}

impl HostEnd {
    /// Host reads that completed with zero bytes (a ZLP outside its transfer).
    pub fn stray_zlps(&self) -> usize {
        self.stray_zlps
    }

    fn next_packet(&mut self) -> Result<Vec<u8>, UsbError> {
        if let Some(p) = self.pending.pop_front() {
            return Ok(p);
        }
        self.packets.recv().map_err(|_| UsbError::Gone)
    }
}

impl UsbPipe for HostEnd {
    fn max_packet_size(&self) -> usize {
        self.mps
    }

    fn read_transfer(&mut self, buf: &mut [u8]) -> Result<usize, UsbError> {
        let mut got = 0;
        loop {
            let p = self.next_packet()?;
            if p.len() > buf.len() - got {
                return Err(UsbError::Overflow(buf.len()));
            }
            buf[got..got + p.len()].copy_from_slice(&p);
            got += p.len();
            if p.len() < self.mps || got == buf.len() {
                if got == 0 {
                    self.stray_zlps += 1;
                }
                return Ok(got);
            }
        }
    }

    fn write_transfer(&mut self, data: &[u8]) -> Result<(), UsbError> {
        if !self.shared.alive.load(Ordering::SeqCst) {
            return Err(UsbError::Gone);
        }
        let mut packets: Vec<&[u8]> = data.chunks(self.mps).collect();
        if packets.is_empty() {
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
}

/// The board side: sends T-messages the way trans_usbg.c does and collects
/// what its receive requests completed with. Dropping it unplugs the board.
pub struct Board {
    mps: usize,
    packets: Sender<Vec<u8>>,
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
            let _ = self.packets.send(p.to_vec());
        }
    }

    pub fn send_zlp(&self) {
        let _ = self.packets.send(Vec::new());
    }

    /// The next completed receive request; panics if none comes in time.
    pub fn recv(&self) -> Vec<u8> {
        match self.received.recv_timeout(STUCK) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => panic!("board got no reply within {STUCK:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("forwarder went away"),
        }
    }

    /// Receive requests that completed empty: a ZLP that leaked past its message.
    pub fn empty_receives(&self) -> usize {
        self.shared.empty_receives.load(Ordering::SeqCst)
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        self.shared.alive.store(false, Ordering::SeqCst);
    }
}
