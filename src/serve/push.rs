//! `tenstore push`: this rank's partition of a store's epochs, each in the
//! order of its epoch plan (resumable), as a ZeroMQ stream of tenbin
//! messages (tensorcom style): a PUSH socket that binds and/or connects, or
//! a PUB socket; multipart or single-frame messages; one sample per
//! message or batches of stacked samples.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::dtype::DType;
use crate::net::NetError;
use crate::plan::{EpochPlan, PlanConfig};
use crate::serve::error::{Result, ServeError};
use crate::store::{Order, Store};
use crate::tensor::TensorView;

/// Which ZeroMQ pattern [`push`] sends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pattern {
    /// A PUSH socket: each message goes to one puller, round robin; a send
    /// waits while every puller's queue is full (nothing is dropped).
    #[default]
    Push,
    /// A PUB socket (tensorcom's `zsub://` receivers, `tensormon`): every
    /// subscriber gets every message, but a subscriber whose queue holds
    /// [`PushConfig::hwm`] messages loses the messages sent meanwhile (PUB
    /// never waits), and one that connects late misses what was sent before.
    Pub,
}

/// What [`push`] does with tensors the reference decoders cannot decode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compat {
    /// Send them, and report each tensor name once ([`CompatWarning`]).
    #[default]
    Warn,
    /// Refuse the push before anything is sent if any sample holds one
    /// ([`ServeError::Incompatible`]).
    Reference,
}

impl std::str::FromStr for Compat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Compat, String> {
        match s {
            "warn" => Ok(Compat::Warn),
            "reference" => Ok(Compat::Reference),
            other => Err(format!(
                "unknown compatibility mode {other:?}: warn or reference"
            )),
        }
    }
}

/// Why webdataset 1.0.2's and tensorcom 0.1.0's `tenbin` cannot decode a
/// tensor (checked by running both on every dtype and on 0-d arrays).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incompatibility {
    /// A 0-d array: their decoders fail with `'numpy.float64' object cannot
    /// be interpreted as an integer`.
    Scalar,
    /// `u4`: their table misspells `uint32`, so they fail with `data type
    /// 'unit32' not understood`.
    U32,
    /// An extension dtype (`b1`, `bf16`, `c8`, `c16`): unknown to them
    /// (`AssertionError` in tensorcom, `unsupported array type` in
    /// webdataset).
    Extension(DType),
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Incompatibility::Scalar => write!(
                f,
                "is a 0-d array (their decoders fail with \"'numpy.float64' object cannot be interpreted as an integer\"; --batch stacks 0-d tensors into 1-d ones, which they decode)"
            ),
            Incompatibility::U32 => write!(
                f,
                "has dtype u4 (their dtype table misspells uint32: \"data type 'unit32' not understood\")"
            ),
            Incompatibility::Extension(d) => write!(
                f,
                "has the extension dtype {d} (unknown to them: an AssertionError in tensorcom, \"unsupported array type\" in webdataset)"
            ),
        }
    }
}

/// Why the reference decoders cannot decode a tensor of this dtype and
/// rank as it is sent, if they cannot.
pub fn incompatibility(dtype: DType, ndim: usize) -> Option<Incompatibility> {
    if dtype == DType::U32 {
        Some(Incompatibility::U32)
    } else if !dtype.is_reference() {
        Some(Incompatibility::Extension(dtype))
    } else if ndim == 0 {
        Some(Incompatibility::Scalar)
    } else {
        None
    }
}

/// A tensor name [`push`] sends that the reference decoders cannot decode
/// (reported once per name).
#[derive(Clone, Debug)]
pub struct CompatWarning {
    /// The tensor's name.
    pub tensor: String,
    /// The key of the first sample where it was seen.
    pub key: Vec<u8>,
    /// Why they cannot decode it.
    pub problem: Incompatibility,
}

impl fmt::Display for CompatWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tensor {:?} (first in sample {}) {}; tensorcom and webdataset 1.0.2 cannot decode it (--compat reference refuses such stores)",
            self.tensor,
            self.key.escape_ascii(),
            self.problem
        )
    }
}

/// What to push and where, for [`push`].
#[derive(Clone, Debug)]
pub struct PushConfig {
    /// Addresses to bind the socket to; `tcp://HOST:*` picks a free port.
    /// Default `["tcp://127.0.0.1:5556"]` (loopback only).
    pub bind: Vec<String>,
    /// Addresses to connect the socket to (a tensorcom `zpull://` receiver
    /// that binds). Default none. A socket may bind and connect.
    pub connect: Vec<String>,
    /// PUSH (default) or PUB.
    pub pattern: Pattern,
    /// Send each message as one frame holding a tenbin buffer (tensorcom's
    /// `multipart=False`) instead of header and data frames.
    pub single: bool,
    /// Stack this many samples' same-named tensors into one message, along
    /// a new first axis (the last message may hold fewer). 1 (default):
    /// one sample per message.
    pub batch: usize,
    /// Add each sample's key as a `u1` tensor of this name (with
    /// `batch` > 1, a `[n, longest key]` array, shorter keys padded with
    /// zero bytes).
    pub key_tensor: Option<String>,
    /// What to do with tensors the reference decoders cannot decode.
    pub compat: Compat,
    /// The send high-water mark: messages queued per peer. `None`: 64 for
    /// PUSH (a send waits beyond it), 1000 for PUB (a slow subscriber loses
    /// messages beyond it).
    pub hwm: Option<i32>,
    /// PUB only: wait until this many subscriptions have arrived before
    /// sending the first message (0, the default: start at once).
    pub subscribers: usize,
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
            bind: vec!["tcp://127.0.0.1:5556".into()],
            connect: Vec::new(),
            pattern: Pattern::Push,
            single: false,
            batch: 1,
            key_tensor: None,
            compat: Compat::Warn,
            hwm: None,
            subscribers: 0,
            plan: PlanConfig::default(),
            epochs: 1,
            resume: 0,
        }
    }
}

/// Where the socket of [`push`] is attached, as reported to its `ready`
/// callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attached {
    /// Bound to this endpoint (the port resolved).
    Bound(String),
    /// Connecting to this address.
    Connected(String),
}

/// Checks a message's tensors before it is sent.
type CheckFn<'c> = dyn FnMut(&[u8], &[TensorView<'_>]) -> Result<()> + 'c;

/// How a send ended.
enum Sent {
    Ok,
    Stopped,
}

/// Samples being stacked into one batch message.
#[derive(Default)]
struct Stack {
    keys: Vec<Vec<u8>>,
    names: Vec<String>,
    dtypes: Vec<DType>,
    shapes: Vec<Vec<usize>>,
    data: Vec<Vec<u8>>,
}

impl Stack {
    fn len(&self) -> usize {
        self.keys.len()
    }

    fn add(&mut self, key: &[u8], tensors: &[TensorView<'_>]) -> Result<()> {
        if self.keys.is_empty() {
            self.names = tensors.iter().map(|t| t.name().to_owned()).collect();
            self.dtypes = tensors.iter().map(|t| t.dtype()).collect();
            self.shapes = tensors.iter().map(|t| t.shape().to_vec()).collect();
            self.data = tensors.iter().map(|_| Vec::new()).collect();
        } else {
            let why = if tensors.len() != self.names.len() {
                Some(format!(
                    "it has {} tensors, the batch {}",
                    tensors.len(),
                    self.names.len()
                ))
            } else {
                tensors.iter().enumerate().find_map(|(i, t)| {
                    if t.name() != self.names[i] {
                        Some(format!(
                            "tensor {i} is named {:?}, not {:?}",
                            t.name(),
                            self.names[i]
                        ))
                    } else if t.dtype() != self.dtypes[i] {
                        Some(format!(
                            "tensor {:?} has dtype {}, not {}",
                            t.name(),
                            t.dtype(),
                            self.dtypes[i]
                        ))
                    } else if t.shape().to_vec() != self.shapes[i] {
                        Some(format!(
                            "tensor {:?} has shape {:?}, not {:?}",
                            t.name(),
                            t.shape().to_vec(),
                            self.shapes[i]
                        ))
                    } else {
                        None
                    }
                })
            };
            if let Some(why) = why {
                return Err(ServeError::Unstackable {
                    key: key.escape_ascii().to_string(),
                    first: self.keys[0].escape_ascii().to_string(),
                    why,
                });
            }
        }
        for (buf, t) in self.data.iter_mut().zip(tensors) {
            buf.extend_from_slice(t.data());
        }
        self.keys.push(key.to_owned());
        Ok(())
    }

    /// The stacked shapes, the key array (padded) and its shape.
    fn parts(&self) -> (Vec<Vec<usize>>, Vec<u8>, [usize; 2]) {
        let n = self.len();
        let shapes = self
            .shapes
            .iter()
            .map(|s| std::iter::once(n).chain(s.iter().copied()).collect())
            .collect();
        let width = self.keys.iter().map(Vec::len).max().unwrap_or(0);
        let mut keys = vec![0u8; n * width];
        for (row, k) in keys.chunks_mut(width.max(1)).zip(&self.keys) {
            row[..k.len()].copy_from_slice(k);
        }
        (shapes, keys, [n, width])
    }

    fn clear(&mut self) {
        self.keys.clear();
        for d in &mut self.data {
            d.clear();
        }
    }
}

/// Streams this rank's partition of `config.epochs` epochs of `store`,
/// each in the order of its epoch plan (the first resumed after
/// `config.resume` consumed positions), on a PUSH or PUB socket bound to
/// and/or connected to the configured addresses, as multipart tenbin
/// frames (tensorcom style: the message's tensors, header and data frames)
/// or single tenbin buffers. Blocks while no puller takes them (PUSH).
/// Calls `ready` with where the socket is attached first (before waiting
/// for the subscribers a PUB waits for), `warn` once per tensor name the
/// reference decoders cannot decode, and counts samples handed to libzmq
/// in `sent`.
///
/// With [`Compat::Reference`], every sample of the store is checked
/// before the socket is made (a pass over the store's headers).
///
/// When `stop` is set (a signal interrupts a blocked send, too), queued
/// messages are dropped and it returns at once. Otherwise it returns after
/// the last message is queued; the socket then waits, on drop, until the
/// peers have taken every queued message.
pub fn push(
    store: &Store,
    config: &PushConfig,
    stop: &AtomicBool,
    sent: &AtomicU64,
    ready: impl FnOnce(&[Attached]),
    mut warn: impl FnMut(&CompatWarning),
) -> Result<()> {
    // Refuse a bad configuration before binding.
    EpochPlan::new(0, config.plan.clone()).map_err(crate::store::StoreError::from)?;
    if config.bind.is_empty() && config.connect.is_empty() {
        return Err(ServeError::Config(
            "nowhere to send: give at least one address to bind or connect".into(),
        ));
    }
    if config.batch == 0 {
        return Err(ServeError::Config("a batch holds at least 1 sample".into()));
    }
    if let Some(name) = &config.key_tensor {
        if let Err(e) = TensorView::new(name, DType::U8, &[1], &[0]) {
            return Err(ServeError::Config(format!("--key-tensor {name:?}: {e}")));
        }
    }
    if config.compat == Compat::Reference {
        check_reference(store, config)?;
    }
    let ctx = zmq::Context::new();
    let socket = match config.pattern {
        Pattern::Push => ctx.socket(zmq::PUSH),
        // XPUB is PUB that also reports subscriptions, so that the push
        // can wait for its subscribers.
        Pattern::Pub if config.subscribers > 0 => ctx.socket(zmq::XPUB),
        Pattern::Pub => ctx.socket(zmq::PUB),
    }
    .map_err(|e| ServeError::zmq("making the socket", e))?;
    let hwm = config.hwm.unwrap_or(match config.pattern {
        Pattern::Push => 64,
        Pattern::Pub => 1000,
    });
    socket
        .set_sndhwm(hwm)
        .map_err(|e| ServeError::zmq("setting ZMQ_SNDHWM", e))?;
    socket
        .set_linger(-1)
        .map_err(|e| ServeError::zmq("setting linger", e))?;
    if config.pattern == Pattern::Pub && config.subscribers > 0 {
        socket
            .set_xpub_verbose(true)
            .map_err(|e| ServeError::zmq("setting ZMQ_XPUB_VERBOSE", e))?;
    }
    let mut attached = Vec::new();
    for bind in &config.bind {
        socket
            .bind(bind)
            .map_err(|e| ServeError::zmq(format!("binding {bind}"), e))?;
        let endpoint = socket
            .get_last_endpoint()
            .map_err(|e| ServeError::zmq("reading the bound endpoint", e))?
            .unwrap_or_default();
        attached.push(Attached::Bound(endpoint));
    }
    for addr in &config.connect {
        socket
            .connect(addr)
            .map_err(|e| ServeError::zmq(format!("connecting to {addr}"), e))?;
        attached.push(Attached::Connected(addr.clone()));
    }
    let stopped = |socket: &zmq::Socket| {
        // Drop what is queued: stopping means now.
        let _ = socket.set_linger(0);
        Ok(())
    };
    ready(&attached);
    if config.pattern == Pattern::Pub && config.subscribers > 0 {
        let mut seen = 0;
        while seen < config.subscribers {
            if stop.load(Ordering::Acquire) {
                return stopped(&socket);
            }
            match socket.poll(zmq::POLLIN, 100) {
                Ok(n) if n > 0 => {
                    let msg = socket
                        .recv_bytes(0)
                        .map_err(|e| ServeError::zmq("receiving a subscription", e))?;
                    if msg.first() == Some(&1) {
                        seen += 1;
                    }
                }
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(ServeError::zmq("waiting for subscribers", e)),
            }
        }
    }

    let deliver = |tensors: &[TensorView<'_>]| -> Result<Sent> {
        let r = if config.single {
            crate::net::zsend_single(&socket, tensors, 0)
        } else {
            crate::net::zsend_multipart(&socket, tensors, 0)
        };
        match r {
            Ok(()) => Ok(Sent::Ok),
            Err(_) if stop.load(Ordering::Acquire) => Ok(Sent::Stopped),
            Err(NetError::Zmq {
                source: zmq::Error::EINTR,
                ..
            }) => {
                // A signal that is not a stop request: the multipart
                // message may be half sent, so the socket cannot go on.
                let _ = socket.set_linger(0);
                Err(ServeError::Interrupted)
            }
            Err(e) => Err(e.into()),
        }
    };
    let mut warned: HashSet<String> = HashSet::new();
    let mut check = |key: &[u8], tensors: &[TensorView<'_>]| -> Result<()> {
        for t in tensors {
            if let Some(problem) = incompatibility(t.dtype(), t.shape().len()) {
                if config.compat == Compat::Reference {
                    // The store changed since the check before sending.
                    return Err(ServeError::Incompatible {
                        key: key.escape_ascii().to_string(),
                        tensor: t.name().to_owned(),
                        problem,
                    });
                }
                if !warned.contains(t.name()) {
                    warned.insert(t.name().to_owned());
                    warn(&CompatWarning {
                        tensor: t.name().to_owned(),
                        key: key.to_owned(),
                        problem,
                    });
                }
            }
        }
        Ok(())
    };
    let mut stack = Stack::default();
    let send_stack = |stack: &mut Stack, check: &mut CheckFn<'_>| -> Result<Sent> {
        let (shapes, keys, key_shape) = stack.parts();
        let mut tensors = Vec::with_capacity(stack.names.len() + 1);
        for (((name, dtype), shape), data) in stack
            .names
            .iter()
            .zip(&stack.dtypes)
            .zip(&shapes)
            .zip(&stack.data)
        {
            tensors.push(view(name, *dtype, shape, data)?);
        }
        if let Some(name) = &config.key_tensor {
            tensors.push(view(name, DType::U8, &key_shape, &keys)?);
        }
        check(&stack.keys[0], &tensors)?;
        let r = deliver(&tensors)?;
        if let Sent::Ok = r {
            sent.fetch_add(stack.len() as u64, Ordering::Relaxed);
        }
        stack.clear();
        Ok(r)
    };
    for e in 0..config.epochs {
        let epoch_config = PlanConfig {
            epoch: config.plan.epoch.saturating_add(e),
            ..config.plan.clone()
        };
        // Where this pass over the epoch's plan starts (`resume_from`).
        let mut from = (e == 0).then_some(config.resume);
        loop {
            let reader = store.reader()?;
            let mut plan = reader.plan(epoch_config.clone())?;
            if let Some(consumed) = from {
                plan = plan.resume_from(consumed);
            }
            let n = reader.len()?;
            let c = plan.config();
            // A partition's `i`-th item is the first of the plan resumed
            // after `start + W·K·i` positions (see `crate::plan`).
            let step = c.world_size.saturating_mul(c.num_workers);
            let mut renew_at = None;
            for (i, sample) in reader.plan_samples(&plan)?.enumerate() {
                // A remote store's reader holding many fetched records
                // is replaced by a fresh one that continues at this
                // position (what it holds is freed; nothing borrows it:
                // batches copy their samples). Not in the padding past
                // `n`, which a resumed plan would not repeat; and only
                // after progress, so that one big record cannot loop.
                if i > 0 && reader.needs_renewal() {
                    let at = plan.start().saturating_add(step.saturating_mul(i as u64));
                    if at <= n {
                        renew_at = Some(at);
                        break;
                    }
                }
                if stop.load(Ordering::Acquire) {
                    return stopped(&socket);
                }
                let sample = sample?;
                let key = sample.key();
                let mut tensors: Vec<TensorView<'_>> = sample.tensors().to_vec();
                if let Some(name) = &config.key_tensor {
                    if tensors.iter().any(|t| t.name() == name) {
                        let _ = socket.set_linger(0);
                        return Err(ServeError::KeyTensorTaken {
                            key: key.escape_ascii().to_string(),
                            name: name.clone(),
                        });
                    }
                }
                if config.batch > 1 {
                    if let Err(e) = stack.add(key, &tensors) {
                        let _ = socket.set_linger(0);
                        return Err(e);
                    }
                    if stack.len() == config.batch {
                        if let Sent::Stopped = send_stack(&mut stack, &mut check)? {
                            return stopped(&socket);
                        }
                    }
                    continue;
                }
                let key_shape = [key.len()];
                if let Some(name) = &config.key_tensor {
                    tensors.push(view(name, DType::U8, &key_shape, key)?);
                }
                check(key, &tensors)?;
                match deliver(&tensors)? {
                    Sent::Ok => {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Sent::Stopped => return stopped(&socket),
                }
            }
            match renew_at {
                Some(at) => from = Some(at),
                None => break,
            }
        }
    }
    if stack.len() > 0 {
        if let Sent::Stopped = send_stack(&mut stack, &mut check)? {
            return stopped(&socket);
        }
    }
    Ok(())
}

/// A tensor from its parts, made by this module (a bad name is the only
/// thing that can fail: the key tensor's, checked before sending).
fn view<'a>(
    name: &'a str,
    dtype: DType,
    shape: &'a [usize],
    data: &'a [u8],
) -> Result<TensorView<'a>> {
    TensorView::new(name, dtype, shape, data).map_err(|e| ServeError::Net(e.into()))
}

/// `--compat reference`: every sample of the store, checked as it would
/// be sent (0-d tensors are fine when batches stack them).
fn check_reference(store: &Store, config: &PushConfig) -> Result<()> {
    let reader = store.reader()?;
    for sample in reader.samples(Order::Written)? {
        let sample = sample?;
        for t in sample.tensors().iter() {
            let ndim = t.ndim() + usize::from(config.batch > 1);
            if let Some(problem) = incompatibility(t.dtype(), ndim) {
                return Err(ServeError::Incompatible {
                    key: sample.key().escape_ascii().to_string(),
                    tensor: t.name().to_owned(),
                    problem,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incompatible_are_0d_u4_and_the_extension_dtypes() {
        let bad: Vec<DType> = DType::ALL
            .into_iter()
            .filter(|&d| incompatibility(d, 1).is_some())
            .collect();
        assert_eq!(
            bad,
            [
                DType::U32,
                DType::Bool,
                DType::BF16,
                DType::C64,
                DType::C128
            ]
        );
        assert_eq!(
            incompatibility(DType::F32, 0),
            Some(Incompatibility::Scalar)
        );
        assert_eq!(incompatibility(DType::F32, 3), None);
    }

    #[test]
    fn stacking_refuses_a_differing_shape_and_pads_keys() {
        let a = [1u8, 2, 3, 4];
        let mut s = Stack::default();
        s.add(b"k1", &[view("x", DType::U8, &[2, 2], &a).unwrap()])
            .unwrap();
        s.add(b"key2", &[view("x", DType::U8, &[2, 2], &a).unwrap()])
            .unwrap();
        let err = s
            .add(b"k3", &[view("x", DType::U8, &[4], &a).unwrap()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("shape [4], not [2, 2]"), "{err}");
        let (shapes, keys, kshape) = s.parts();
        assert_eq!(shapes, [vec![2, 2, 2]]);
        assert_eq!(kshape, [2, 4]);
        assert_eq!(keys, b"k1\0\0key2");
        assert_eq!(s.data[0], [1, 2, 3, 4, 1, 2, 3, 4]);
    }
}
