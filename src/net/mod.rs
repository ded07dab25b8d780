//! Tensors over the network: ZeroMQ single and multipart messages (as
//! tensorcom and webdataset send them), SCTP messages, and the
//! `tenstore serve` request server.
//!
//! The store layer knows nothing of this one; this one hands out what the
//! codec and the stores give it.

#[cfg(feature = "zmq")]
mod budget;
mod error;
pub mod protocol;
mod sctp;
#[cfg(feature = "zmq")]
mod server;
#[cfg(feature = "zmq")]
mod zmq;

#[cfg(feature = "zmq")]
pub use self::zmq::{
    zrecv_multipart, zrecv_single, zsend_multipart, zsend_single, Frames, ZmqBytes,
};
pub use error::{NetError, Result};
pub use protocol::{handle, Limits, Reply};
pub use sctp::{recv_message, sctp_recv, sctp_send, sctp_socket, send_message, AlignedBuf};
#[cfg(feature = "zmq")]
pub use server::{push, push_plan, ServeConfig, ServeStats, Server};
