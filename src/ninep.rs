//! The 9P side: message framing, the frame loop that carries one board's
//! requests to its server and the replies back, and the server connection
//! with its policy (bounded connect, backoff, rate limit). Nothing here
//! touches USB except through the `UsbPipe` trait.

pub mod backend;
pub mod confine;
pub mod forward;
pub mod fids;
pub mod frame;
pub mod reconnect;
