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
//!   PUSH or PUB stream (tensorcom's receivers take it).
//! - [`pull()`] (feature `zmq`): a stream of tenbin messages (tensorcom's
//!   senders, `push`) written into a store.

#[cfg(feature = "zmq")]
mod budget;
mod error;
pub mod protocol;
#[cfg(feature = "zmq")]
mod pull;
#[cfg(feature = "zmq")]
mod push;
#[cfg(feature = "zmq")]
mod server;

pub use error::{Result, ServeError};
pub use protocol::{handle, Limits, Reply};
#[cfg(feature = "zmq")]
pub use pull::{pull, KeyFormat, KeySource, PullConfig, PullEvent, PullStats, Skip};
#[cfg(feature = "zmq")]
pub use push::{
    incompatibility, push, Attached, Compat, CompatWarning, Incompatibility, Pattern, PushConfig,
};
#[cfg(feature = "zmq")]
pub use server::{ServeConfig, ServeStats, Server};
