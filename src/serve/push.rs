//! `tenstore push`: this rank's partition of a store's epochs, each in the
//! order of its epoch plan (resumable), as a ZeroMQ PUSH stream of
//! multipart tenbin messages (tensorcom style).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::net::NetError;
use crate::plan::{EpochPlan, PlanConfig};
use crate::serve::error::{Result, ServeError};
use crate::store::Store;

/// What to push and where, for [`push`].
#[derive(Clone, Debug)]
pub struct PushConfig {
    /// Where to bind the PUSH socket; `tcp://HOST:*` picks a free port.
    /// Default `tcp://127.0.0.1:5556` (loopback only).
    pub bind: String,
    /// The epoch plan: seed, first epoch, shuffle, this rank's partition.
    /// Epoch `e` of the run follows `plan` with `epoch + e`. Default: one
    /// partition, storage order.
    pub plan: PlanConfig,
    /// How many epochs. Default 1.
    pub epochs: u64,
    /// Global positions of the first epoch already consumed
    /// ([`EpochPlan::resume_from`]). Default 0.
    pub resume: u64,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            bind: "tcp://127.0.0.1:5556".into(),
            plan: PlanConfig::default(),
            epochs: 1,
            resume: 0,
        }
    }
}

/// Streams this rank's partition of `config.epochs` epochs of `store`,
/// each in the order of its epoch plan (the first resumed after
/// `config.resume` consumed positions), on a PUSH socket bound to
/// `config.bind`, as multipart tenbin frames (tensorcom style: the sample's
/// tensors, header and data frames). Blocks while no puller takes them.
/// Calls `ready` with the bound endpoint first, and counts samples handed
/// to libzmq in `sent`.
///
/// When `stop` is set (a signal interrupts a blocked send, too), queued
/// samples are dropped and it returns at once. Otherwise it returns after
/// the last sample is queued; the socket then waits, on drop, until the
/// pullers have taken every queued sample.
pub fn push(
    store: &Store,
    config: &PushConfig,
    stop: &AtomicBool,
    sent: &AtomicU64,
    ready: impl FnOnce(&str),
) -> Result<()> {
    let bind = config.bind.as_str();
    // Refuse a bad configuration before binding.
    EpochPlan::new(0, config.plan.clone()).map_err(crate::store::StoreError::from)?;
    let ctx = zmq::Context::new();
    let socket = ctx
        .socket(zmq::PUSH)
        .map_err(|e| ServeError::zmq("making the PUSH socket", e))?;
    socket
        .set_sndhwm(64)
        .map_err(|e| ServeError::zmq("setting ZMQ_SNDHWM", e))?;
    socket
        .set_linger(-1)
        .map_err(|e| ServeError::zmq("setting linger", e))?;
    socket
        .bind(bind)
        .map_err(|e| ServeError::zmq(format!("binding {bind}"), e))?;
    let endpoint = socket
        .get_last_endpoint()
        .map_err(|e| ServeError::zmq("reading the bound endpoint", e))?
        .unwrap_or_default();
    ready(&endpoint);
    let stopped = |socket: &zmq::Socket| {
        // Drop what is queued: stopping means now.
        let _ = socket.set_linger(0);
        Ok(())
    };
    for e in 0..config.epochs {
        let reader = store.reader()?;
        let epoch_config = PlanConfig {
            epoch: config.plan.epoch.saturating_add(e),
            ..config.plan.clone()
        };
        let mut plan = reader.plan(epoch_config)?;
        if e == 0 {
            plan = plan.resume_from(config.resume);
        }
        for sample in reader.plan_samples(&plan)? {
            if stop.load(Ordering::Acquire) {
                return stopped(&socket);
            }
            let sample = sample?;
            let views = sample.tensors().to_vec();
            match crate::net::zsend_multipart(&socket, &views, 0) {
                Ok(()) => {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) if stop.load(Ordering::Acquire) => return stopped(&socket),
                Err(NetError::Zmq {
                    source: zmq::Error::EINTR,
                    ..
                }) => {
                    // A signal that is not a stop request: the multipart
                    // message may be half sent, so the socket cannot go on.
                    let _ = socket.set_linger(0);
                    return Err(ServeError::Interrupted);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}
