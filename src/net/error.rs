//! The network layer's error type.

/// Result alias for the network layer.
pub type Result<T, E = NetError> = std::result::Result<T, E>;

/// Everything that can go wrong sending or receiving tensors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// An error from ZeroMQ, with what was being done.
    #[cfg(feature = "zmq")]
    #[error("{context}: {source}")]
    Zmq {
        /// What was being done.
        context: String,
        /// ZeroMQ's error.
        #[source]
        source: zmq::Error,
    },

    /// Received bytes that are not valid tenbin.
    #[error("received message: {0}")]
    Codec(#[from] crate::Error),

    /// This kernel cannot make SCTP sockets.
    #[error("this kernel has no SCTP support (socket(IPPROTO_SCTP) failed: {0}); load the sctp module or use another transport")]
    NoSctp(std::io::Error),

    /// A message larger than the receiver's limit.
    #[error("received a message larger than the {max}-byte limit; it was discarded, not decoded in part")]
    TooLarge {
        /// The limit.
        max: usize,
    },

    /// The peer closed the connection (a zero-length message).
    #[error("the peer closed the connection")]
    Closed,

    /// A multipart message that ended where more frames were expected, or
    /// held none.
    #[error("{0}")]
    Protocol(String),

    /// A socket error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl NetError {
    #[cfg(feature = "zmq")]
    pub(crate) fn zmq(context: impl Into<String>, source: zmq::Error) -> Self {
        NetError::Zmq {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        NetError::Io {
            context: context.into(),
            source,
        }
    }
}
