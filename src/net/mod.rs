//! Tensors over the network: ZeroMQ single and multipart messages (as
//! tensorcom and webdataset send them) and SCTP messages.
//!
//! This layer is transport only: it frames what the codec gives it and
//! knows nothing of stores. Serving a store (the `tenstore serve`
//! protocol and server, `tenstore push`) is [`crate::serve`].

mod error;
mod sctp;
#[cfg(feature = "zmq")]
mod zmq;

#[cfg(feature = "zmq")]
pub use self::zmq::{
    zrecv_multipart, zrecv_single, zsend_multipart, zsend_single, Frames, ZmqBytes,
};
pub use error::{NetError, Result};
pub use sctp::{recv_message, sctp_recv, sctp_send, sctp_socket, send_message, AlignedBuf};
