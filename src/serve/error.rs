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

    /// `--compat reference`: a tensor the reference decoders (webdataset
    /// 1.0.2's and tensorcom 0.1.0's `tenbin`) cannot decode.
    #[cfg(feature = "zmq")]
    #[error("sample {key}: tensor {tensor:?} {problem}; tensorcom and webdataset 1.0.2 cannot decode it, and the compatibility mode is `reference` (nothing was sent)")]
    Incompatible {
        /// The sample's key, escaped for display.
        key: String,
        /// The tensor's name.
        tensor: String,
        /// What the reference cannot decode.
        problem: super::push::Incompatibility,
    },

    /// `--batch`: samples that cannot be stacked into one message.
    #[error("cannot stack sample {key} into a batch with sample {first}: {why}; `--batch` needs samples with the same tensor names, dtypes and shapes")]
    Unstackable {
        /// The sample that does not fit, escaped for display.
        key: String,
        /// The batch's first sample, escaped for display.
        first: String,
        /// What differs.
        why: String,
    },

    /// `--key-tensor NAME` where a sample already has a tensor of that name.
    #[error("sample {key} already has a tensor named {name:?}; choose another --key-tensor name")]
    KeyTensorTaken {
        /// The sample's key, escaped for display.
        key: String,
        /// The name asked for.
        name: String,
    },

    /// A configuration that cannot work, refused before anything is sent
    /// or received.
    #[error("{0}")]
    Config(String),
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
