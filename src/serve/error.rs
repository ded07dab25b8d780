//! The serve layer's error type.

/// Result alias for the serve layer.
pub type Result<T, E = ServeError> = std::result::Result<T, E>;

/// Everything that can go wrong serving or pushing a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
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

    /// An operating-system error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },

    /// A send was interrupted by a signal that was not a stop request; a
    /// multipart message may be half sent, so the stream cannot go on.
    #[error("a send was interrupted by a signal")]
    Interrupted,

    /// An error sending or receiving tensors.
    #[error(transparent)]
    Net(#[from] crate::net::NetError),

    /// An error of the store being served.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl ServeError {
    #[cfg(feature = "zmq")]
    pub(crate) fn zmq(context: impl Into<String>, source: zmq::Error) -> Self {
        ServeError::Zmq {
            context: context.into(),
            source,
        }
    }

    #[cfg(feature = "zmq")]
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ServeError::Io {
            context: context.into(),
            source,
        }
    }
}
