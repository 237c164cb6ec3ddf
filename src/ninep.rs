//! The 9P side: message framing, the frame loop that carries one board's
//! requests to its server and the replies back, the server connection with
//! its policy (bounded connect, backoff, rate limit), and what the loop knows
//! of a session (fid table, confinement, recovery after a server restart).
//! Nothing here touches USB except through the `UsbPipe` trait.

pub mod backend;
pub mod board_backend;
pub mod confine;
pub mod fids;
pub mod forward;
pub mod frame;
pub mod managed;
pub mod recover;
pub mod track;
pub mod wire;
