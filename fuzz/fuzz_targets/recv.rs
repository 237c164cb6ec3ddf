//! The T-message receive path (`pipe::recv_message`) against the in-memory
//! gadget, fed whatever packets a hostile board could send: short, full and
//! zero-length packets in any order, split or glued frames, sizes that lie.
//!
//! Input: one byte picks wMaxPacketSize and the session's ceiling, then a
//! list of packet operations until the input ends:
//!   op % 4 == 0  a zero-length packet
//!   op % 4 == 1  a short packet: length u16 % mps, then that many bytes
//!   op % 4 == 2  a full packet: the next mps bytes
//!   op % 4 == 3  a run: count u16 % 1024, fill byte: that many full packets
//!                of the fill byte (so large frames need only a few input
//!                bytes)
//! The board is then unplugged, and the receiver takes messages until it
//! reports the board gone; every error in between is survived, every
//! message checked. recv_message must not allocate (budget 0).
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use usb9pfsd::ninep::frame::{self, HEADER_LEN};
use usb9pfsd::usb::pipe::{self, RecvError, UsbError};
use usb9pfsd::usb::sim;
use usb9pfsd_fuzz::{budget, Input, MAX_CEILING};

const MPS: [usize; 4] = [8, 64, 512, 1024];
const CEILINGS: [u32; 8] = [7, 8, 511, 512, 4096, 16384, 65536 + 3, MAX_CEILING];
/// Packets one input may queue: the largest legal frame at 512-byte packets
/// and a few more (time per input grows with it; 8-byte packets stay small).
const MAX_PACKETS: usize = MAX_CEILING as usize / 512 + 64;

thread_local! {
    /// The worker's receive buffer, allocated once like forward.rs does.
    static BUF: RefCell<Vec<u8>> =
        RefCell::new(vec![0; pipe::request_len(MAX_CEILING, MPS[MPS.len() - 1])]);
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let pick = input.u8();
    let mps = MPS[usize::from(pick) % MPS.len()];
    let ceiling = CEILINGS[usize::from(pick >> 2) % CEILINGS.len()];

    let (mut host, board) = sim::gadget(mps, 1 << 20);
    let mut packets = 0;
    while !input.is_empty() && packets < MAX_PACKETS {
        packets += 1;
        let op = input.u8();
        match op % 4 {
            0 => board.send_zlp(),
            1 => {
                let len = usize::from(input.u16()) % mps;
                board.send_raw(input.bytes(len));
            }
            2 => {
                let mut p = input.bytes(mps).to_vec();
                p.resize(mps, 0);
                board.send_raw(&p);
            }
            _ => {
                let count = usize::from(input.u16()) % 1024;
                let fill = vec![input.u8(); mps];
                for _ in 0..count.min(MAX_PACKETS - packets) {
                    board.send_raw(&fill);
                    packets += 1;
                }
            }
        }
    }
    drop(board);

    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let buf = &mut buf[..pipe::request_len(ceiling, mps)];
        loop {
            match budget(0, || pipe::recv_message(&mut host, buf, ceiling)) {
                Ok(n) => {
                    assert!(HEADER_LEN <= n && n <= ceiling as usize, "{n} bytes under ceiling {ceiling}");
                    assert_eq!(frame::peek_size(buf), Some(n as u32));
                }
                Err(RecvError::Usb(UsbError::Gone)) => break,
                Err(_) => {}
            }
        }
    });
});
