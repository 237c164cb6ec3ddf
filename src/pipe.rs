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
//! This module must never allocate per message and never decide policy
//! (which backend, retries): it only moves bytes and validates sizes.

use crate::frame::{self, FrameError};

/// One claimed usb9pfs interface: a bulk IN and a bulk OUT endpoint.
pub trait UsbPipe: Send {
    /// wMaxPacketSize of the endpoints (512 at high speed, 1024 at super speed).
    fn max_packet_size(&self) -> usize;
    /// One bulk IN transfer into `buf`. Blocks until the board ends the
    /// transfer (short packet, ZLP, or `buf` full) or goes away.
    fn read_transfer(&mut self, buf: &mut [u8]) -> Result<usize, UsbError>;
    /// One bulk OUT transfer of exactly `data`; an empty slice sends a ZLP.
    fn write_transfer(&mut self, data: &[u8]) -> Result<(), UsbError>;
}

/// What can go wrong on the USB side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsbError {
    #[error("board disconnected")]
    Gone,
    #[error("board sent more than the {0}-byte transfer could hold")]
    Overflow(usize),
    #[error("endpoint stalled")]
    Stall,
    #[error("USB transfer failed: {0}")]
    Transfer(String),
}

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

/// The longest single IN transfer we ask for. usbfs turns a longer one into a
/// scatter-gather URB (USB_SG_SIZE), an allocation per transfer and a path
/// that dummy_hcd mishandles across disconnects; 9P frames up to the kernel's
/// default `buflen` fit in one transfer of this size anyway.
pub const IN_CHUNK: usize = 16384;

/// Receives one T-message from the board into `buf` and returns its length.
///
/// `buf` must be at least `request_len(ceiling, mps)` long. Stray ZLPs are
/// skipped; a message the board split over several transfers (or one longer
/// than [`IN_CHUNK`]) is joined; the declared size is checked against
/// `ceiling` before more is read.
pub fn recv_message<P: UsbPipe + ?Sized>(
    pipe: &mut P,
    buf: &mut [u8],
    ceiling: u32,
) -> Result<usize, RecvError> {
    let want = request_len(ceiling, pipe.max_packet_size()).min(buf.len());
    let mut got = 0;
    let read = |pipe: &mut P, buf: &mut [u8], got: usize| {
        let end = (got + IN_CHUNK).min(want);
        pipe.read_transfer(&mut buf[got..end])
    };
    let size = loop {
        got += read(pipe, buf, got)?;
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
        let n = read(pipe, buf, got)?;
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

/// Sends one R-message to the board as one transfer, plus the ZLP the
/// board's receive request needs when the message is a whole number of
/// packets shorter than its `board_buflen`.
pub fn send_message<P: UsbPipe + ?Sized>(
    pipe: &mut P,
    msg: &[u8],
    board_buflen: u32,
) -> Result<(), UsbError> {
    pipe.write_transfer(msg)?;
    if needs_zlp(msg.len(), pipe.max_packet_size(), board_buflen) {
        pipe.write_transfer(&[])?;
    }
    Ok(())
}

/// True when a message of `len` bytes would leave the board's receive
/// request waiting without a terminating ZLP.
pub fn needs_zlp(len: usize, max_packet: usize, board_buflen: u32) -> bool {
    max_packet > 0 && len % max_packet == 0 && len < board_buflen as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{self, Board};

    fn msg(len: usize, fill: u8) -> Vec<u8> {
        let mut m = vec![fill; len];
        m[..4].copy_from_slice(&(len as u32).to_le_bytes());
        m
    }

    fn pair(buflen: u32) -> (sim::HostEnd, Board) {
        sim::gadget(512, buflen)
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
    fn frames_longer_than_one_in_chunk_are_joined() {
        let (mut host, board) = pair(1 << 20);
        let mut buf = vec![0; request_len(65536, 512)];
        for len in [IN_CHUNK + 1, 2 * IN_CHUNK, 40000, 65536] {
            let m = msg(len, (len % 251) as u8);
            board.send(&m);
            assert_eq!(recv_message(&mut host, &mut buf, 65536), Ok(len), "len {len}");
            assert_eq!(&buf[..len], &m[..]);
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
        assert_eq!(
            recv_message(&mut host, &mut buf, 16384),
            Err(RecvError::Frame(FrameError::TooLarge { size: 16385, ceiling: 16384 }))
        );
    }

    #[test]
    fn malformed_sizes_are_refused() {
        let mut buf = vec![0; request_len(8192, 512)];
        for declared in [0u32, 3, 6, 8193, u32::MAX] {
            let (mut host, board) = pair(16384);
            let mut m = msg(64, 1);
            m[..4].copy_from_slice(&declared.to_le_bytes());
            board.send(&m);
            assert!(
                matches!(recv_message(&mut host, &mut buf, 8192), Err(RecvError::Frame(_))),
                "declared {declared}"
            );
        }
        // Declares more than the board then sends: a length mismatch, not a hang.
        let (mut host, board) = pair(16384);
        let mut m = msg(64, 1);
        m[..4].copy_from_slice(&100u32.to_le_bytes());
        board.send(&m);
        board.send_zlp();
        assert_eq!(
            recv_message(&mut host, &mut buf, 8192),
            Err(RecvError::Frame(FrameError::LengthMismatch { declared: 100, got: 64 }))
        );
        // Declares less than the transfer carried.
        let (mut host, board) = pair(16384);
        let mut m = msg(64, 1);
        m[..4].copy_from_slice(&20u32.to_le_bytes());
        board.send(&m);
        assert_eq!(
            recv_message(&mut host, &mut buf, 8192),
            Err(RecvError::Frame(FrameError::LengthMismatch { declared: 20, got: 64 }))
        );
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
    fn disconnect_is_reported_as_gone() {
        let (mut host, board) = pair(16384);
        drop(board);
        let mut buf = vec![0; 1024];
        assert_eq!(recv_message(&mut host, &mut buf, 512), Err(RecvError::Usb(UsbError::Gone)));
        assert_eq!(host.write_transfer(b"x"), Err(UsbError::Gone));
    }
}
