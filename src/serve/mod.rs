//! Serving a store: the `tenstore serve` request protocol, the ZeroMQ
//! request server with its bound on queued reply bytes, and the
//! `tenstore push` stream.
//!
//! This layer sits on top of the two below it: it reads samples through
//! [`crate::store`] and sends them with [`crate::net`]'s framing. Neither
//! of those knows anything of it.
//!
//! - [`protocol`]: a request's frames in, reply frames out, without
//!   sockets (needs no ZeroMQ).
//! - [`Server`] (feature `zmq`): a ROUTER socket whose thread answers
//!   from read snapshots, with helper threads for long requests.
//! - [`push()`] (feature `zmq`): a rank's partition of epoch plans as a
//!   PUSH stream.

#[cfg(feature = "zmq")]
mod budget;
mod error;
pub mod protocol;
#[cfg(feature = "zmq")]
mod push;
#[cfg(feature = "zmq")]
mod server;

pub use error::{Result, ServeError};
pub use protocol::{handle, Limits, Reply};
#[cfg(feature = "zmq")]
pub use push::{push, PushConfig};
#[cfg(feature = "zmq")]
pub use server::{ServeConfig, ServeStats, Server};
