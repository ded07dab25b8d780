//! `tenstore pull`: a ZeroMQ stream of tenbin messages (tensorcom's
//! multipart or single-frame senders, `tenstore push`) written into a
//! store, one sample per message, committed in batches.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::codec::TensorBuf;
use crate::dtype::DType;
use crate::net::{Frames, NetError, ZmqBytes};
use crate::serve::error::{Result, ServeError};
use crate::store::key::check_key;
use crate::store::{Store, StoreError};
use crate::tensor::TensorView;

/// How [`pull`] names the samples it stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// From the `u1` 1-d tensor of this name in each message (as `tenstore
    /// push --key-tensor` adds it), which is not stored.
    Tensor(String),
    /// From a counter of the messages taken, formatted.
    Format(KeyFormat),
}

/// A key format: text with one counter placeholder, `{}` (the number),
/// `{:N}` (padded with spaces to N digits) or `{:0N}` (padded with zeros);
/// a trailing `d` in the placeholder is allowed (`{:08d}`), and `{{`, `}}`
/// are literal braces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFormat {
    prefix: String,
    suffix: String,
    width: usize,
    zeros: bool,
}

impl Default for KeyFormat {
    /// `{:08}`: `00000000`, `00000001`, ...
    fn default() -> Self {
        KeyFormat {
            prefix: String::new(),
            suffix: String::new(),
            width: 8,
            zeros: true,
        }
    }
}

impl std::str::FromStr for KeyFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<KeyFormat, String> {
        let bad = |why: &str| {
            format!("bad key format {s:?}: {why}; use one placeholder such as {{}}, {{:08}} or run3-{{:06d}}")
        };
        let mut parts: [String; 2] = Default::default();
        let mut spec: Option<String> = None;
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    parts[usize::from(spec.is_some())].push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    parts[usize::from(spec.is_some())].push('}');
                }
                '{' => {
                    if spec.is_some() {
                        return Err(bad("more than one placeholder"));
                    }
                    let mut inner = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => inner.push(c),
                            None => return Err(bad("an unclosed {")),
                        }
                    }
                    spec = Some(inner);
                }
                '}' => return Err(bad("a } without {")),
                c => parts[usize::from(spec.is_some())].push(c),
            }
        }
        let Some(spec) = spec else {
            return Err(bad("no placeholder for the counter"));
        };
        let (width, zeros) = if spec.is_empty() {
            (0, false)
        } else {
            let digits = spec
                .strip_prefix(':')
                .ok_or_else(|| bad("a placeholder is {} or {:WIDTH}"))?;
            let digits = digits.strip_suffix('d').unwrap_or(digits);
            let zeros = digits.starts_with('0');
            let width: usize = if digits.is_empty() {
                0
            } else {
                digits
                    .parse()
                    .map_err(|_| bad("the width is not a number"))?
            };
            if width > 40 {
                return Err(bad("the width is more than 40"));
            }
            (width, zeros)
        };
        let [prefix, suffix] = parts;
        Ok(KeyFormat {
            prefix,
            suffix,
            width,
            zeros,
        })
    }
}

impl KeyFormat {
    /// The key of counter value `n`.
    pub fn key(&self, n: u64) -> Vec<u8> {
        let (p, s, w) = (&self.prefix, &self.suffix, self.width);
        if self.zeros {
            format!("{p}{n:0w$}{s}").into_bytes()
        } else {
            format!("{p}{n:w$}{s}").into_bytes()
        }
    }
}

/// What to pull and how, for [`pull`].
#[derive(Clone, Debug)]
pub struct PullConfig {
    /// Addresses to bind the PULL socket to (tensorcom `zpush://` senders
    /// connect to it).
    pub bind: Vec<String>,
    /// Addresses to connect the PULL socket to (`tenstore push --bind`,
    /// tensorcom `zrpush://`).
    pub connect: Vec<String>,
    /// Take single-frame messages (tensorcom's `multipart=False`) instead
    /// of multipart ones.
    pub single: bool,
    /// How samples are named. Default: the counter format `{:08}`.
    pub key: KeySource,
    /// Stop after storing this many samples.
    pub max: Option<u64>,
    /// Samples per commit. Default 256.
    pub commit_every: usize,
    /// Commit a batch that is not full this long after its first message
    /// (so a slow or paused stream is still committed). Default one second.
    pub commit_after: Duration,
    /// Replace samples the store already holds (and, within the stream,
    /// keep a key's last message). Without it such messages are skipped
    /// and counted.
    pub overwrite: bool,
    /// The largest frame accepted (ZeroMQ disconnects a peer that sends a
    /// larger one), and the most tensor bytes one message may hold (a
    /// larger message is refused and counted). Default 1 GiB. A batch is
    /// committed early once it holds 256 MiB.
    pub max_frame: i64,
    /// The receive high-water mark (messages queued). Default 64.
    pub hwm: i32,
}

impl Default for PullConfig {
    fn default() -> Self {
        PullConfig {
            bind: Vec::new(),
            connect: Vec::new(),
            single: false,
            key: KeySource::Format(KeyFormat::default()),
            max: None,
            commit_every: 256,
            commit_after: Duration::from_secs(1),
            overwrite: false,
            max_frame: 1 << 30,
            hwm: 64,
        }
    }
}

impl PullConfig {
    /// Refuses a configuration that cannot work (nowhere to receive from,
    /// a key format whose keys cannot be stored), before anything is
    /// opened; [`pull`] calls it too.
    pub fn check(&self) -> Result<()> {
        if self.bind.is_empty() && self.connect.is_empty() {
            return Err(ServeError::Config(
                "nowhere to receive from: give an address to bind or connect".into(),
            ));
        }
        if let KeySource::Format(f) = &self.key {
            for n in [0, u64::MAX] {
                if let Err(e) = check_key(&f.key(n)) {
                    return Err(ServeError::Config(format!(
                        "the key format makes keys such as {}: {e}",
                        f.key(n).escape_ascii()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Counts of a [`pull`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PullStats {
    /// Messages received.
    pub received: u64,
    /// Samples committed to the store.
    pub stored: u64,
    /// Messages that were not tenbin (or not in the framing asked for).
    pub malformed: u64,
    /// Well-formed messages refused: no usable key, no tensors, a name the
    /// store's backend reserves, a key already held (without overwrite).
    pub refused: u64,
}

/// Why a message was skipped.
#[derive(Clone, Debug)]
pub enum Skip {
    /// Not tenbin, or not in the framing asked for.
    Malformed(String),
    /// Well-formed but refused.
    Refused(String),
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::Malformed(why) => write!(f, "malformed: {why}"),
            Skip::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}

/// What [`pull`] reports as it goes.
#[derive(Debug)]
pub enum PullEvent<'a> {
    /// The socket is bound and connected: these endpoints (bound ones with
    /// the port resolved), then these addresses.
    Ready(&'a [String]),
    /// A batch is committed and durable (as `flush` makes it): `stored`
    /// samples in all so far; every one of them survives a crash.
    Committed {
        /// Samples stored so far.
        stored: u64,
    },
    /// Message number `message` (from 1) was skipped.
    Skipped {
        /// Its number among the messages received, from 1.
        message: u64,
        /// Why.
        why: Skip,
    },
}

/// A received message.
enum Msg {
    Single(TensorBuf<ZmqBytes>),
    Multi(Frames),
}

impl Msg {
    fn tensors(&self) -> Vec<TensorView<'_>> {
        match self {
            Msg::Single(b) => b.tensors().to_vec(),
            Msg::Multi(f) => f.iter().collect(),
        }
    }
}

/// A message accepted into the current batch.
struct Pending {
    message: u64,
    key: Vec<u8>,
    msg: Msg,
    /// Index of the key tensor, left out when storing.
    key_index: Option<usize>,
}

/// Receives tenbin messages on a PULL socket and stores each as one sample
/// of `store`, in batches: a batch is committed (one `put_batch`, then
/// `flush`, so it is durable whatever the backend) when it holds
/// `commit_every` samples, `commit_after` after its first message, and on
/// stopping. Messages that are not tenbin, or are refused (see
/// [`PullStats`]), are counted, reported and skipped; the stream goes on.
///
/// Returns when `max` samples are stored or `stop` is set (a signal), after
/// committing what was received: every message received before is either
/// stored or counted as skipped. A store error ends it with the error;
/// the batches reported committed before stay stored.
pub fn pull(
    store: &Store,
    config: &PullConfig,
    stop: &AtomicBool,
    mut on: impl FnMut(PullEvent<'_>),
) -> Result<PullStats> {
    config.check()?;
    let reserved = store.backend().reserved_names();
    let ctx = zmq::Context::new();
    let socket = ctx
        .socket(zmq::PULL)
        .map_err(|e| ServeError::zmq("making the PULL socket", e))?;
    socket
        .set_rcvhwm(config.hwm)
        .map_err(|e| ServeError::zmq("setting ZMQ_RCVHWM", e))?;
    socket
        .set_maxmsgsize(config.max_frame)
        .map_err(|e| ServeError::zmq("setting ZMQ_MAXMSGSIZE", e))?;
    socket
        .set_linger(0)
        .map_err(|e| ServeError::zmq("setting linger", e))?;
    let mut attached = Vec::new();
    for bind in &config.bind {
        socket
            .bind(bind)
            .map_err(|e| ServeError::zmq(format!("binding {bind}"), e))?;
        attached.push(
            socket
                .get_last_endpoint()
                .map_err(|e| ServeError::zmq("reading the bound endpoint", e))?
                .unwrap_or_default(),
        );
    }
    for addr in &config.connect {
        socket
            .connect(addr)
            .map_err(|e| ServeError::zmq(format!("connecting to {addr}"), e))?;
        attached.push(addr.clone());
    }
    on(PullEvent::Ready(&attached));

    let mut stats = PullStats::default();
    let mut counter = 0u64;
    let mut pending: Vec<Pending> = Vec::new();
    let mut pending_bytes = 0u64;
    let mut first_at = Instant::now();
    let max = config.max.unwrap_or(u64::MAX);
    let commit_every = config.commit_every.max(1);
    loop {
        let room = max.saturating_sub(stats.stored);
        let full = pending.len() >= commit_every
            || pending.len() as u64 >= room
            || pending_bytes >= PENDING_BYTES;
        let stopping = stop.load(Ordering::Acquire);
        let due = !pending.is_empty() && first_at.elapsed() >= config.commit_after;
        if full || stopping || due {
            if !pending.is_empty() {
                commit(store, config, &mut pending, &mut stats, &mut on)?;
                pending_bytes = 0;
            }
            if stopping || stats.stored >= max {
                return Ok(stats);
            }
            continue;
        }
        let wait = if pending.is_empty() {
            100
        } else {
            let left = config.commit_after.saturating_sub(first_at.elapsed());
            left.as_millis().clamp(1, 100) as i64
        };
        match socket.poll(zmq::POLLIN, wait) {
            // Idle: the loop's checks commit when the time has come.
            Ok(0) => continue,
            Ok(_) => {}
            Err(zmq::Error::EINTR) => continue,
            Err(e) => return Err(ServeError::zmq("waiting for messages", e)),
        }
        let received = if config.single {
            crate::net::zrecv_single(&socket, zmq::DONTWAIT).map(Msg::Single)
        } else {
            crate::net::zrecv_multipart(&socket, zmq::DONTWAIT).map(Msg::Multi)
        };
        let msg = match received {
            Ok(msg) => msg,
            Err(NetError::Zmq {
                source: zmq::Error::EAGAIN | zmq::Error::EINTR,
                ..
            }) => continue,
            Err(NetError::Zmq { context, source }) => {
                return Err(ServeError::zmq(context, source));
            }
            Err(e) => {
                stats.received += 1;
                stats.malformed += 1;
                let mut why = e.to_string();
                if !config.single
                    && matches!(e, NetError::Codec(crate::Error::OddFrames { frames: 1 }))
                {
                    why += " (a single-frame message? give --single)";
                }
                on(PullEvent::Skipped {
                    message: stats.received,
                    why: Skip::Malformed(why),
                });
                continue;
            }
        };
        stats.received += 1;
        let message = stats.received;
        let refuse = |stats: &mut PullStats, on: &mut dyn FnMut(PullEvent<'_>), why: String| {
            stats.refused += 1;
            on(PullEvent::Skipped {
                message,
                why: Skip::Refused(why),
            });
        };
        let tensors = msg.tensors();
        let (key, key_index) = match &config.key {
            KeySource::Format(f) => (f.key(counter), None),
            KeySource::Tensor(name) => match tensors.iter().position(|t| t.name() == name) {
                None => {
                    refuse(
                        &mut stats,
                        &mut on,
                        format!("no tensor named {name:?} to take the key from"),
                    );
                    continue;
                }
                Some(i) => {
                    let t = &tensors[i];
                    if t.dtype() != DType::U8 || t.ndim() != 1 {
                        refuse(
                                &mut stats,
                                &mut on,
                                format!(
                                    "the key tensor {name:?} is {} of shape {:?}, not a 1-d u1 array (a batch from push --batch holds many keys: pull it with --key-format)",
                                    t.dtype(),
                                    t.shape().to_vec()
                                ),
                            );
                        continue;
                    }
                    (t.data().to_vec(), Some(i))
                }
            },
        };
        if let Err(e) = check_key(&key) {
            refuse(
                &mut stats,
                &mut on,
                format!("key {}: {e}", key.escape_ascii()),
            );
            continue;
        }
        let stored_count = tensors.len() - usize::from(key_index.is_some());
        if stored_count == 0 {
            refuse(&mut stats, &mut on, "no tensors to store".into());
            continue;
        }
        let bytes: u64 = tensors.iter().map(|t| t.data().len() as u64).sum();
        if bytes > config.max_frame.max(0) as u64 {
            refuse(
                &mut stats,
                &mut on,
                format!(
                    "its tensors hold {bytes} bytes, more than --max-frame ({}) for a whole message",
                    config.max_frame
                ),
            );
            continue;
        }
        if let Some(t) = tensors
            .iter()
            .enumerate()
            .find(|(i, t)| Some(*i) != key_index && reserved.contains(&t.name()))
        {
            refuse(
                &mut stats,
                &mut on,
                format!(
                    "tensor name {:?} is reserved by the store's record layout",
                    t.1.name()
                ),
            );
            continue;
        }
        drop(tensors);
        // The counter numbers the messages taken, so its keys have no gaps
        // where messages were refused.
        counter += 1;
        if pending.is_empty() {
            first_at = Instant::now();
        }
        pending_bytes += bytes;
        pending.push(Pending {
            message,
            key,
            msg,
            key_index,
        });
    }
}

/// Commits `pending` as one batch and makes it durable; refuses (counts)
/// keys already held or repeated, unless overwriting.
fn commit(
    store: &Store,
    config: &PullConfig,
    pending: &mut Vec<Pending>,
    stats: &mut PullStats,
    on: &mut impl FnMut(PullEvent<'_>),
) -> Result<()> {
    let mut keep = vec![true; pending.len()];
    if config.overwrite {
        // The last message of a key wins: put_batch writes in order.
    } else {
        let mut seen = HashSet::new();
        // The reader is dropped before writing: an LMDB writer that grows
        // the map waits for readers.
        let reader = store.reader()?;
        for (i, p) in pending.iter().enumerate() {
            let held = !matches!(reader.get(&p.key), Ok(None));
            if held || !seen.insert(p.key.as_slice()) {
                keep[i] = false;
                stats.refused += 1;
                on(PullEvent::Skipped {
                    message: p.message,
                    why: Skip::Refused(format!(
                        "key {} is already {} (--overwrite replaces)",
                        p.key.escape_ascii(),
                        if held {
                            "in the store"
                        } else {
                            "taken by an earlier message"
                        }
                    )),
                });
            }
        }
    }
    let kept: Vec<&Pending> = pending
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(p, _)| p)
        .collect();
    let batch: Vec<(&[u8], Vec<TensorView<'_>>)> = kept
        .iter()
        .map(|p| {
            let mut tensors = p.msg.tensors();
            if let Some(i) = p.key_index {
                tensors.remove(i);
            }
            (p.key.as_slice(), tensors)
        })
        .collect();
    let mut n = batch.len() as u64;
    if n > 0 {
        match store.put_batch(&batch) {
            Ok(()) => {}
            // A batch is all or nothing: when the store refuses one of its
            // samples, the others are stored one by one and the refused
            // ones counted, so one message cannot stop the stream.
            Err(e) if refuses_the_sample(&e) => {
                n = 0;
                for (p, sample) in kept.iter().zip(&batch) {
                    match store.put_batch(std::slice::from_ref(sample)) {
                        Ok(()) => n += 1,
                        Err(e) if refuses_the_sample(&e) => {
                            stats.refused += 1;
                            on(PullEvent::Skipped {
                                message: p.message,
                                why: Skip::Refused(e.to_string()),
                            });
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
        store.flush()?;
    }
    drop(batch);
    drop(kept);
    pending.clear();
    stats.stored += n;
    if n > 0 {
        on(PullEvent::Committed {
            stored: stats.stored,
        });
    }
    Ok(())
}

/// Whether a store error is about one sample (which is refused and
/// counted) rather than the store (which ends the pull).
fn refuses_the_sample(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::TooLarge { .. } | StoreError::BadKey { .. } | StoreError::ReservedName { .. }
    )
}

/// Bytes of tensors a batch holds at most before it is committed early:
/// memory stays bounded whatever `commit_every` and the message sizes.
const PENDING_BYTES: u64 = 256 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_formats() {
        let k = |f: &str, n| String::from_utf8(f.parse::<KeyFormat>().unwrap().key(n)).unwrap();
        assert_eq!(k("{}", 7), "7");
        assert_eq!(k("{:08}", 7), "00000007");
        assert_eq!(k("run3-{:06d}.x", 42), "run3-000042.x");
        assert_eq!(k("{{a}}{:3}", 5), "{a}  5");
        assert_eq!(KeyFormat::default().key(3), b"00000003");
        for bad in ["abc", "{}{}", "{:x}", "{", "a}", "{:99}"] {
            assert!(bad.parse::<KeyFormat>().is_err(), "{bad}");
        }
    }
}
