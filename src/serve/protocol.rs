//! The `tenstore serve` request protocol, without sockets: a request's
//! frames in, reply frames out. Socket handling lives in `server`.
//!
//! | request frames | reply frames |
//! | --- | --- |
//! | `get KEY [KEY ...]` | `ok V [V ...]`, each V a sample's tenbin buffer |
//! | `getm KEY` | `ok H D H D ...`, the sample as multipart frames |
//! | `len` | `ok N` (decimal) |
//! | `keys [PREFIX [AFTER [LIMIT]]]` | `ok K K ...` in key order, after AFTER (exclusive), at most LIMIT (default 10,000) |
//! | `info` | `ok JSON` (`{"backend", "samples", "bytes"}`) |
//! | `plan SEED EPOCH RANK WORLD SHUFFLE [AFTER [LIMIT]]` | `ok K K ...`: the keys of rank RANK of WORLD in the epoch plan (`crate::plan`, drop-last), from its item AFTER (default 0: the number of this partition's keys already received) on, at most LIMIT (default 10,000); SHUFFLE is `none`, `full` or `blocks:N` |
//! | anything else | `err MESSAGE` |

use std::borrow::Cow;

use crate::codec::encode_list;
use crate::store::key::{check_key_len, MAX_KEY_LEN};
use crate::store::{Reader, StoreError};

/// Bounds on what one request may ask for.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest frame a client may send (`ZMQ_MAXMSGSIZE`; a client that
    /// sends more is disconnected by libzmq). Default 64 KiB.
    pub max_frame_bytes: usize,
    /// Most frames in one request (command included); more is refused.
    /// Default 1,025 (a `get` of 1,024 keys).
    pub max_frames: usize,
    /// Longest key. Default [`MAX_KEY_LEN`], 511 (the stores' limit).
    pub max_key_len: usize,
    /// Largest reply, in bytes of sample data. Default 256 MiB.
    pub max_reply_bytes: usize,
    /// Most keys one `keys` request lists. Default 100,000.
    pub max_list: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 64 << 10,
            max_frames: 1025,
            max_key_len: MAX_KEY_LEN,
            max_reply_bytes: 256 << 20,
            max_list: 100_000,
        }
    }
}

/// Default page size of `keys`.
pub const DEFAULT_LIST: usize = 10_000;

/// A reply: `ok` and frames, or `err` and a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'r> {
    /// `ok` followed by these frames.
    Ok(Vec<Cow<'r, [u8]>>),
    /// `err` followed by this message.
    Err(String),
}

impl Reply<'_> {
    /// The status frame.
    pub fn status(&self) -> &'static [u8] {
        match self {
            Reply::Ok(_) => b"ok",
            Reply::Err(_) => b"err",
        }
    }
}

/// Bytes for an error message: printable ASCII as is, `"` and `\\` and the
/// rest escaped once, cut at 64 bytes.
fn text(bytes: &[u8]) -> String {
    let shown: Vec<u8> = bytes.iter().copied().take(64).collect();
    let mut s = shown.escape_ascii().to_string();
    if bytes.len() > 64 {
        s.push_str("...");
    }
    s
}

fn number(arg: &[u8], what: &str) -> Result<usize, String> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .ok_or_else(|| format!("{what} must be a decimal number, not \"{}\"", text(arg)))
}

/// Answers one request (the frames after the envelope) from a snapshot.
/// Every command, `info` and `len` included, answers from `reader` alone:
/// none opens a second snapshot, so none waits for the store (an LMDB map
/// that grows) while the caller holds this one. Never panics; any problem
/// is an `err` reply.
pub fn handle<'r>(reader: &'r Reader<'_>, request: &[&'r [u8]], limits: &Limits) -> Reply<'r> {
    match respond(reader, request, limits) {
        Ok(frames) => Reply::Ok(frames),
        Err(msg) => Reply::Err(msg),
    }
}

/// The stores' key rule ([`check_key_len`]) at the limit of `limits`.
fn check_key<'k>(key: &'k [u8], limits: &Limits) -> Result<&'k [u8], String> {
    match check_key_len(key, limits.max_key_len) {
        Ok(()) => Ok(key),
        Err(StoreError::BadKey { len, max }) => {
            Err(format!("keys are 1 to {max} bytes; got one of {len}"))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn respond<'r>(
    reader: &'r Reader<'_>,
    request: &[&'r [u8]],
    limits: &Limits,
) -> Result<Vec<Cow<'r, [u8]>>, String> {
    let (&cmd, args) = request
        .split_first()
        .ok_or("empty request: send a command frame (get, getm, len, keys, info, plan)")?;
    if request.len() > limits.max_frames {
        return Err(format!(
            "request has {} frames; at most {} are allowed",
            request.len(),
            limits.max_frames
        ));
    }
    match cmd {
        b"get" => {
            if args.is_empty() {
                return Err("get needs at least one key".into());
            }
            let mut frames = Vec::with_capacity(args.len());
            let mut total = 0usize;
            for &key in args {
                let key = check_key(key, limits)?;
                let sample = reader
                    .get_checked(key)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("no sample with key \"{}\"", text(key)))?;
                total = total.saturating_add(sample.as_bytes().len());
                if total > limits.max_reply_bytes {
                    return Err(format!(
                        "reply would exceed {} bytes; ask for fewer keys",
                        limits.max_reply_bytes
                    ));
                }
                frames.push(Cow::Borrowed(sample.as_bytes()));
            }
            Ok(frames)
        }
        b"getm" => {
            let [key] = args else {
                return Err("getm takes exactly one key".into());
            };
            let key = check_key(key, limits)?;
            let sample = reader
                .get_checked(key)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no sample with key \"{}\"", text(key)))?;
            if sample.as_bytes().len() > limits.max_reply_bytes {
                return Err(format!(
                    "reply would exceed {} bytes",
                    limits.max_reply_bytes
                ));
            }
            let views = sample.tensors().to_vec();
            // Headers are new; data frames borrow the snapshot.
            let mut out = Vec::with_capacity(2 * views.len());
            for (h, v) in encode_list(&views).into_iter().step_by(2).zip(&views) {
                out.push(Cow::Owned(h.into_owned()));
                out.push(Cow::Borrowed(v.data()));
            }
            Ok(out)
        }
        b"len" => {
            if !args.is_empty() {
                return Err("len takes no arguments".into());
            }
            let n = reader.len().map_err(|e| e.to_string())?;
            Ok(vec![Cow::Owned(n.to_string().into_bytes())])
        }
        b"keys" => {
            if args.len() > 3 {
                return Err("keys takes at most PREFIX, AFTER and LIMIT".into());
            }
            let prefix = args.first().copied().unwrap_or(b"");
            let after = args.get(1).copied().filter(|a| !a.is_empty());
            let limit = match args.get(2) {
                Some(l) => number(l, "LIMIT")?,
                None => DEFAULT_LIST,
            };
            if limit > limits.max_list {
                return Err(format!("LIMIT is at most {}", limits.max_list));
            }
            if prefix.len() > limits.max_key_len
                || after.is_some_and(|a| a.len() > limits.max_key_len)
            {
                return Err(format!(
                    "PREFIX and AFTER are at most {} bytes",
                    limits.max_key_len
                ));
            }
            let mut out = Vec::new();
            for key in reader
                .keys(prefix, after)
                .map_err(|e| e.to_string())?
                .take(limit)
            {
                out.push(Cow::Borrowed(key.map_err(|e| e.to_string())?));
            }
            Ok(out)
        }
        b"info" => {
            if !args.is_empty() {
                return Err("info takes no arguments".into());
            }
            let s = reader
                .stats()
                .map_err(|e| format!("could not read the store's statistics: {e}"))?;
            let json = format!(
                "{{\"backend\":\"{}\",\"samples\":{},\"bytes\":{}}}",
                s.backend.name(),
                s.samples,
                s.bytes
            );
            Ok(vec![Cow::Owned(json.into_bytes())])
        }
        b"plan" => plan_page(reader, args, limits),
        other => Err(format!(
            "unknown command \"{}\": send get, getm, len, keys, info or plan",
            text(other)
        )),
    }
}

fn number64(arg: &[u8], what: &str) -> Result<u64, String> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| format!("{what} must be a decimal number, not \"{}\"", text(arg)))
}

/// `plan SEED EPOCH RANK WORLD SHUFFLE [AFTER [LIMIT]]`: one page of the
/// keys of a rank's partition of an epoch plan.
fn plan_page<'r>(
    reader: &'r Reader<'_>,
    args: &[&'r [u8]],
    limits: &Limits,
) -> Result<Vec<Cow<'r, [u8]>>, String> {
    use crate::plan::{PlanConfig, Shuffle};
    if !(5..=7).contains(&args.len()) {
        return Err(
            "plan takes SEED EPOCH RANK WORLD SHUFFLE and optionally AFTER and LIMIT".into(),
        );
    }
    let shuffle: Shuffle = std::str::from_utf8(args[4])
        .map_err(|_| {
            format!(
                "unknown shuffle \"{}\": none, full or blocks:N",
                text(args[4])
            )
        })?
        .parse()
        .map_err(|e: crate::plan::PlanError| e.to_string())?;
    let config = PlanConfig {
        seed: number64(args[0], "SEED")?,
        epoch: number64(args[1], "EPOCH")?,
        rank: number64(args[2], "RANK")?,
        world_size: number64(args[3], "WORLD")?,
        shuffle,
        ..PlanConfig::default()
    };
    let after = match args.get(5) {
        Some(a) => number64(a, "AFTER")?,
        None => 0,
    };
    let limit = match args.get(6) {
        Some(l) => number(l, "LIMIT")?,
        None => DEFAULT_LIST,
    };
    if limit > limits.max_list {
        return Err(format!("LIMIT is at most {}", limits.max_list));
    }
    let plan = reader.plan(config).map_err(|e| e.to_string())?;
    let keys = reader
        .plan_keys(&plan, after, limit as u64)
        .map_err(|e| e.to_string())?;
    Ok(keys.into_iter().map(Cow::Borrowed).collect())
}
