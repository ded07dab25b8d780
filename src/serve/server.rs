//! `tenstore serve`: a ZeroMQ ROUTER owned by one thread that answers
//! requests on it directly, with helper threads for the long ones, all
//! answering from read snapshots of one generation (see [`Views`]), with
//! the reply bytes waiting for clients bounded (see `budget`).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::serve::budget::{self, ReplyBudget};
use crate::serve::error::{Result, ServeError};
use crate::serve::protocol::{handle, Limits, Reply};
use crate::store::{Reader, ShardReader, Store};

/// How to serve.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Where to listen. Default `tcp://127.0.0.1:5555` (loopback only).
    pub bind: String,
    /// Threads that answer requests: the one that owns the socket, which
    /// answers short requests itself (a `get` of up to 8 keys, `getm`,
    /// `len`), and `threads - 1` helpers for the long ones (listings,
    /// `info`, larger gets). Replies to one client come back in the order
    /// of its requests with 1 thread; with more, a short request may be
    /// answered before a long one sent earlier. Default
    /// [`ServeConfig::default_threads`].
    pub threads: usize,
    /// How long a thread may answer from one snapshot before taking a
    /// new one (so new samples become visible); an idle thread lets its
    /// snapshot go after this long. Default 100 ms.
    pub refresh: Duration,
    /// Request bounds.
    pub limits: Limits,
    /// How long shutdown waits for requests in flight. Default 10 s.
    pub drain: Duration,
    /// Bytes of reply data that may wait, in all, for clients to read them
    /// (queued in the server or being written to a socket). A reply that
    /// does not fit is refused with `err server busy: ...`. Default 1 GiB.
    pub max_queued_bytes: usize,
    /// Of those, the bytes one client may hold; a client with nothing
    /// unread may always get one reply that fits in `max_queued_bytes`.
    /// Default 128 MiB.
    pub max_peer_queued_bytes: usize,
    /// Replies one client may leave unread (`ZMQ_SNDHWM`); replies to it
    /// beyond these are dropped. Default 256.
    pub peer_send_hwm: i32,
}

impl ServeConfig {
    /// The default [`threads`](Self::threads): the CPUs this process may
    /// use, at least 2 (so a long request never holds up short ones) and
    /// at most 8. Short requests are answered by the socket's thread
    /// alone, whatever the count, so more threads than CPUs would only
    /// make long requests compete with it.
    pub fn default_threads() -> usize {
        std::thread::available_parallelism()
            .map_or(2, usize::from)
            .clamp(2, 8)
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            bind: "tcp://127.0.0.1:5555".into(),
            threads: ServeConfig::default_threads(),
            refresh: Duration::from_millis(100),
            limits: Limits::default(),
            drain: Duration::from_secs(10),
            max_queued_bytes: 1 << 30,
            max_peer_queued_bytes: 128 << 20,
            peer_send_hwm: 256,
        }
    }
}

/// Counts of what a server did.
#[derive(Debug, Default)]
pub struct ServeStats {
    /// Requests answered `ok`.
    pub ok: AtomicU64,
    /// Requests answered `err`.
    pub err: AtomicU64,
    /// Replies dropped because their client had left, or had
    /// [`ServeConfig::peer_send_hwm`] replies unread.
    pub dropped: AtomicU64,
}

/// Requests handed to the helpers and not yet answered, at most; past
/// this the owner answers long requests itself too.
const MAX_IN_FLIGHT: usize = 256;

/// Requests the owner reads one after another before it looks at its
/// helpers' answers again.
const BURST: usize = 64;

/// A `get` of more keys than this goes to a helper thread, when there are
/// any.
const OFFLOAD_KEYS: usize = 8;

/// A server bound and ready: [`Server::endpoint`] says where.
pub struct Server {
    /// The context the socket lives in (dropped after it).
    _ctx: zmq::Context,
    frontend: zmq::Socket,
    endpoint: String,
    config: ServeConfig,
    store: Store,
    stats: Arc<ServeStats>,
    budget: Arc<ReplyBudget>,
    loopback: bool,
}

/// The envelope of a request: the routing identity and, for REQ clients
/// (and DEALERs that mimic them), the empty delimiter frame.
fn envelope_len(frames: &[zmq::Message]) -> usize {
    if frames.len() > 1 && frames[1].is_empty() {
        2
    } else {
        1
    }
}

impl Server {
    /// Binds the front socket. A host name is resolved and its address
    /// bound (IPv4 first); an IPv6 address turns on `ZMQ_IPV6`. A bind
    /// address with port `*` picks a free port; [`endpoint`](Self::endpoint)
    /// tells which.
    pub fn bind(store: Store, config: ServeConfig) -> Result<Server> {
        let ctx = zmq::Context::new();
        let frontend = ctx
            .socket(zmq::ROUTER)
            .map_err(|e| ServeError::zmq("making the ROUTER socket", e))?;
        frontend
            .set_maxmsgsize(config.limits.max_frame_bytes as i64)
            .map_err(|e| ServeError::zmq("setting ZMQ_MAXMSGSIZE", e))?;
        // Replies to a client that has left are dropped at once.
        frontend
            .set_linger(0)
            .map_err(|e| ServeError::zmq("setting linger", e))?;
        frontend
            .set_sndhwm(config.peer_send_hwm)
            .map_err(|e| ServeError::zmq("setting ZMQ_SNDHWM", e))?;
        // A reply that cannot be queued is an error the proxy counts, not a
        // silent drop.
        frontend
            .set_router_mandatory(true)
            .map_err(|e| ServeError::zmq("setting ZMQ_ROUTER_MANDATORY", e))?;
        let target = BindTarget::resolve(&config.bind)?;
        frontend
            .set_ipv6(target.ipv6)
            .map_err(|e| ServeError::zmq("setting ZMQ_IPV6", e))?;
        frontend
            .bind(&target.endpoint)
            .map_err(|e| ServeError::zmq(target.context(&config.bind), e))?;
        let endpoint = frontend
            .get_last_endpoint()
            .map_err(|e| ServeError::zmq("reading the bound endpoint", e))?
            .unwrap_or_else(|raw| String::from_utf8_lossy(&raw).into_owned());
        Ok(Server {
            _ctx: ctx,
            frontend,
            loopback: is_loopback_endpoint(&endpoint),
            endpoint,
            budget: ReplyBudget::new(config.max_queued_bytes, config.max_peer_queued_bytes),
            config,
            store,
            stats: Arc::new(ServeStats::default()),
        })
    }

    /// The address clients connect to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether only this host can reach [`endpoint`](Self::endpoint): an
    /// address in 127.0.0.0/8 or `::1` (or `::ffff:127.x.y.z`), `ipc://`
    /// or `inproc://`. Judged by the bound address, not its spelling.
    pub fn loopback_only(&self) -> bool {
        self.loopback
    }

    /// Counters of answered requests.
    pub fn stats(&self) -> Arc<ServeStats> {
        self.stats.clone()
    }

    /// Serves until `stop` becomes true, then stops taking requests,
    /// answers those in flight (up to `drain`) and returns.
    ///
    /// The calling thread owns the ROUTER socket and answers most
    /// requests itself, straight from its snapshot: no hop between
    /// threads. With `threads` > 1 it hands the requests that take long
    /// (listings, `info`, gets of more than 8 keys) to
    /// `threads - 1` helper threads and sends their replies when they are
    /// done, so a large request does not hold up the small ones behind it.
    pub fn run(self, stop: &AtomicBool) -> Result<()> {
        let Server {
            _ctx,
            frontend,
            config,
            store,
            stats,
            budget,
            ..
        } = self;
        let views = Views::new(&store, config.refresh);
        let answerer = Answerer {
            views: &views,
            config: &config,
            stats: &stats,
            budget: &budget,
        };
        let mut front = Front {
            socket: frontend,
            config: &config,
            stats: &stats,
        };
        let helpers = config.threads.max(1) - 1;
        if helpers == 0 {
            return front.serve(stop, &answerer, None);
        }
        let pool = Pool::default();
        let (done_tx, done_rx) = mpsc::channel::<Answer>();
        let (wake_rx, wake_tx) = UnixStream::pair()
            .map_err(|e| ServeError::io("making the helpers' wake-up socket pair", e))?;
        for s in [&wake_rx, &wake_tx] {
            s.set_nonblocking(true)
                .map_err(|e| ServeError::io("making the helpers' wake-up socket pair", e))?;
        }
        std::thread::scope(|s| {
            let start = || -> Result<()> {
                for i in 0..helpers {
                    let (pool, answerer, done, waker) =
                        (&pool, &answerer, done_tx.clone(), &wake_tx);
                    std::thread::Builder::new()
                        .name(format!("tenstore-helper-{i}"))
                        .spawn_scoped(s, move || helper(pool, answerer, done, waker))
                        .map_err(|e| ServeError::io("starting a helper thread", e))?;
                }
                Ok(())
            };
            let link = Helpers {
                pool: &pool,
                done: done_rx,
                wake: &wake_rx,
            };
            let result = start().and_then(|()| front.serve(stop, &answerer, Some(&link)));
            // The scope joins the helpers when they see this.
            pool.stop();
            result
        })
    }
}

/// What [`Front::read_request`] found.
enum Incoming {
    /// No request is waiting.
    None,
    /// A request that was answered `err` at once (too many frames).
    Refused,
    /// A request: envelope, command, arguments.
    Request(Vec<zmq::Message>),
}

/// The ROUTER socket and what its owner needs beside it.
struct Front<'a> {
    socket: zmq::Socket,
    config: &'a ServeConfig,
    stats: &'a ServeStats,
}

impl Front<'_> {
    /// Answers requests on the ROUTER until stopped: reads every request
    /// waiting (without a poll per request), answers it here or hands it
    /// to a helper, and sends the helpers' replies.
    fn serve<'s>(
        &mut self,
        stop: &AtomicBool,
        answerer: &Answerer<'_, 's>,
        helpers: Option<&Helpers<'_>>,
    ) -> Result<()> {
        let mut held: Option<Held<'s>> = None;
        let mut in_flight = 0usize;
        let mut stopping: Option<Instant> = None;
        loop {
            if stopping.is_none() && stop.load(Ordering::Acquire) {
                stopping = Some(Instant::now());
            }
            if let Some(t) = stopping {
                if in_flight == 0 || t.elapsed() > self.config.drain {
                    // Replies handed to libzmq but not yet written to their
                    // peers are sent before the socket closes (within what
                    // is left of `drain`), not dropped.
                    let left = self.config.drain.saturating_sub(t.elapsed());
                    let _ = self
                        .socket
                        .set_linger(i32::try_from(left.as_millis()).unwrap_or(i32::MAX));
                    return Ok(());
                }
            }
            // Everything that is waiting, then a poll only when nothing is.
            let mut busy = false;
            if let Some(h) = helpers {
                while let Ok(done) = h.done.try_recv() {
                    in_flight -= 1;
                    busy = true;
                    self.send_answer(done)?;
                }
            }
            if stopping.is_none() {
                for _ in 0..BURST {
                    let frames = match self.read_request()? {
                        Incoming::None => break,
                        Incoming::Refused => {
                            busy = true;
                            continue;
                        }
                        Incoming::Request(frames) => frames,
                    };
                    busy = true;
                    match helpers {
                        Some(h) if in_flight < MAX_IN_FLIGHT && heavy(&frames) => {
                            h.pool.push(frames);
                            in_flight += 1;
                        }
                        _ => {
                            let answer = answerer.answer(frames, &mut held);
                            self.send_answer(answer)?;
                        }
                    }
                }
            }
            if busy {
                continue;
            }
            let mut items = [
                self.socket.as_poll_item(if stopping.is_some() {
                    zmq::PollEvents::empty()
                } else {
                    zmq::POLLIN
                }),
                zmq::PollItem::from_fd(
                    helpers.map_or(-1, |h| h.wake.as_raw_fd()),
                    if helpers.is_some() {
                        zmq::POLLIN
                    } else {
                        zmq::PollEvents::empty()
                    },
                ),
            ];
            let n = match zmq::poll(&mut items, 100) {
                Ok(n) => n,
                // A signal (the stop request itself, usually): look again.
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(ServeError::zmq("polling", e)),
            };
            if let Some(h) = helpers {
                if items[1].is_readable() {
                    h.drain_wakes();
                }
            }
            if n == 0 {
                // Idle: let an old snapshot go, so it pins nothing.
                answerer.idle(&mut held, true);
            }
        }
    }

    /// Reads one request from the front without waiting. A request with
    /// too many frames is drained and answered `err` here.
    fn read_request(&mut self) -> Result<Incoming> {
        // Identity, delimiter, command and keys.
        let max = self.config.limits.max_frames + 2;
        let first = loop {
            match self.socket.recv_msg(zmq::DONTWAIT) {
                Ok(m) => break m,
                Err(zmq::Error::EAGAIN) => return Ok(Incoming::None),
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(ServeError::zmq("receiving", e)),
            }
        };
        let (frames, dropped) = recv_rest(&self.socket, first, max)?;
        if dropped == 0 {
            return Ok(Incoming::Request(frames));
        }
        let env = envelope_len(&frames);
        let total = frames.len() + dropped - env;
        let mut head: Vec<zmq::Message> = frames.into_iter().take(env).collect();
        head.push(zmq::Message::from(&b"err"[..]));
        head.push(zmq::Message::from(
            format!(
                "request has {total} frames; at most {} are allowed",
                self.config.limits.max_frames
            )
            .as_bytes(),
        ));
        self.stats.err.fetch_add(1, Ordering::Relaxed);
        self.send_answer(Answer {
            head,
            data: Vec::new(),
        })?;
        Ok(Incoming::Refused)
    }

    /// Sends a reply to the front without blocking. A reply to a client
    /// that has left, or that has [`ServeConfig::peer_send_hwm`] replies
    /// unread, is dropped (its memory is freed at once) and counted.
    fn send_answer(&mut self, answer: Answer) -> Result<()> {
        let Answer { head, data } = answer;
        let rest = head.len().saturating_sub(1) + data.len();
        let mut head = head.into_iter();
        let Some(identity) = head.next() else {
            return Ok(());
        };
        let more = if rest > 0 { zmq::SNDMORE } else { 0 };
        // The routing frame decides: sent, or refused as a whole.
        loop {
            match self.socket.send(&identity[..], more | zmq::DONTWAIT) {
                Ok(()) => break,
                Err(zmq::Error::EINTR) => continue,
                Err(zmq::Error::EAGAIN | zmq::Error::EHOSTUNREACH) => {
                    let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    if n <= 20 || n.is_multiple_of(1000) {
                        eprintln!(
                            "tenstore serve: reply #{n} dropped: its client has left or has {} \
                             replies unread",
                            self.config.peer_send_hwm
                        );
                    }
                    return Ok(());
                }
                Err(e) => return Err(ServeError::zmq("sending a reply", e)),
            }
        }
        // The rest of a message whose first frame was taken is taken too.
        let mut left = rest;
        for f in head {
            left -= 1;
            let flags = if left > 0 { zmq::SNDMORE } else { 0 };
            self.socket
                .send(f, flags | zmq::DONTWAIT)
                .map_err(|e| ServeError::zmq("sending a reply", e))?;
        }
        for f in data {
            left -= 1;
            let flags = if left > 0 { zmq::SNDMORE } else { 0 };
            f.send(&mut self.socket, flags | zmq::DONTWAIT)
                .map_err(|e| ServeError::io("sending a reply", e))?;
        }
        Ok(())
    }
}

/// A bind address made ready for libzmq.
struct BindTarget {
    /// What to bind: the address given, or the address its host name
    /// resolved to.
    endpoint: String,
    /// Whether the address is IPv6 (the socket needs `ZMQ_IPV6`).
    ipv6: bool,
    /// Why the host was not resolved, when it was not (libzmq then tries
    /// it as a network interface name).
    unresolved: Option<String>,
}

impl BindTarget {
    /// Resolves the host of a `tcp://HOST:PORT` address: an IP address
    /// stays as it is, `*` too; a host name becomes its first IPv4 address
    /// (clients reach those without `ZMQ_IPV6`), else its first IPv6
    /// address. Other transports pass through.
    fn resolve(bind: &str) -> Result<BindTarget> {
        let plain = |ipv6| BindTarget {
            endpoint: bind.to_string(),
            ipv6,
            unresolved: None,
        };
        let Some((host, port)) = bind
            .strip_prefix("tcp://")
            .and_then(|rest| rest.rsplit_once(':'))
        else {
            return Ok(plain(false));
        };
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host == "*" {
            return Ok(plain(false));
        }
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(plain(ip.is_ipv6()));
        }
        if bare.contains(':') {
            // An IPv6 address with a scope, say: libzmq's to judge.
            return Ok(plain(true));
        }
        let port_no = if port == "*" {
            Ok(0)
        } else {
            port.parse::<u16>()
        };
        let Ok(port_no) = port_no else {
            return Ok(plain(false));
        };
        let addrs: Vec<SocketAddr> = match (bare, port_no).to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => {
                return Ok(BindTarget {
                    unresolved: Some(format!("{bare} is not a host name that resolves ({e})")),
                    ..plain(false)
                })
            }
        };
        let Some(ip) = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .map(SocketAddr::ip)
        else {
            return Ok(BindTarget {
                unresolved: Some(format!("{bare} resolves to no address")),
                ..plain(false)
            });
        };
        let endpoint = match ip {
            IpAddr::V4(v4) => format!("tcp://{v4}:{port}"),
            IpAddr::V6(v6) => format!("tcp://[{v6}]:{port}"),
        };
        Ok(BindTarget {
            endpoint,
            ipv6: ip.is_ipv6(),
            unresolved: None,
        })
    }

    /// What a failed bind was doing, for its error message.
    fn context(&self, bind: &str) -> String {
        match &self.unresolved {
            Some(why) => format!("binding {bind} ({why}, nor a network interface)"),
            None if self.endpoint != bind => format!("binding {bind} (as {})", self.endpoint),
            None => format!("binding {bind}"),
        }
    }
}

/// Whether only this host can reach a bound endpoint (as libzmq reports
/// it): loopback addresses, `ipc://` and `inproc://`.
fn is_loopback_endpoint(endpoint: &str) -> bool {
    if endpoint.starts_with("ipc://") || endpoint.starts_with("inproc://") {
        return true;
    }
    let Some((host, _)) = endpoint
        .strip_prefix("tcp://")
        .and_then(|rest| rest.rsplit_once(':'))
    else {
        return false;
    };
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.is_loopback(),
        Ok(IpAddr::V6(v6)) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

/// Receives the rest of a multipart message whose first frame is
/// `first`, keeping at most `max` frames and counting (and dropping) the
/// rest. (libzmq delivers a message's frames together: these never wait.)
fn recv_rest(
    socket: &zmq::Socket,
    first: zmq::Message,
    max: usize,
) -> Result<(Vec<zmq::Message>, usize)> {
    let mut more = first.get_more();
    let mut frames = vec![first];
    let mut dropped = 0;
    while more {
        let msg = socket
            .recv_msg(0)
            .map_err(|e| ServeError::zmq("receiving", e))?;
        more = msg.get_more();
        if frames.len() < max {
            frames.push(msg);
        } else {
            dropped += 1;
        }
    }
    Ok((frames, dropped))
}

/// Logs an `err` reply to stderr, sparingly: the first 20, then every
/// 1,000th, so a flood of bad requests cannot flood the log.
fn log_err(count: u64, msg: &str) {
    if count <= 20 || count.is_multiple_of(1000) {
        eprintln!("tenstore serve: request #{count} refused: {msg}");
    }
}

/// A thread's snapshot and the version of the store it shows.
struct Held<'s> {
    reader: Reader<'s>,
    taken: Instant,
    /// LMDB: the snapshot's transaction id; shards: the generation of the
    /// shared snapshot. A snapshot taken later never has a smaller one.
    version: u64,
}

/// What the answering threads share so that no client sees the store go
/// backwards (a key listed by one thread and then missing at the next):
/// every reply is answered from a snapshot at least as new as any reply
/// sent before.
///
/// Shard snapshots own their maps and can be cloned: threads answer from
/// clones of one current snapshot, renewed (incrementally) by the first
/// thread that finds it older than `refresh`. LMDB read transactions
/// cannot be shared between threads (heed's `RoTxn` is `Send`, not `Sync`:
/// LMDB updates a transaction's state while reading), so each thread holds
/// its own, and `answered` (the newest transaction id any reply was
/// answered from) makes a thread whose snapshot is older take a new one
/// before it answers. A new read transaction sees every commit so far, so
/// its id is at least `answered`.
struct Views<'s> {
    store: &'s Store,
    refresh: Duration,
    /// The newest version any reply was answered from.
    answered: AtomicU64,
    shards: Mutex<SharedShards>,
}

/// The current shard snapshot and its generation.
#[derive(Default)]
struct SharedShards {
    current: Option<(ShardReader, Instant)>,
    generation: u64,
}

impl<'s> Views<'s> {
    fn new(store: &'s Store, refresh: Duration) -> Views<'s> {
        Views {
            store,
            refresh,
            answered: AtomicU64::new(0),
            shards: Mutex::new(SharedShards::default()),
        }
    }

    fn lock_shards(&self) -> std::sync::MutexGuard<'_, SharedShards> {
        // A snapshot and its number, replaced together: nothing half done.
        self.shards.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `held` fit to answer a request that just arrived: taken no
    /// longer than `refresh` ago and at least as new as every reply sent.
    /// `None` when the store cannot be read.
    fn fresh(&self, held: &mut Option<Held<'s>>) {
        let newest = self.answered.load(Ordering::Acquire);
        // A remote store's reader holding many fetched records is
        // replaced: a request's reply is copied out before the next one,
        // so nothing borrows them then.
        if held.as_ref().is_some_and(|h| {
            h.taken.elapsed() <= self.refresh && h.version >= newest && !h.reader.needs_renewal()
        }) {
            return;
        }
        // The old snapshot ends before the new one begins (LMDB may need
        // every snapshot of this process closed to adopt a grown map).
        *held = None;
        *held = self.take().ok();
    }

    fn take(&self) -> crate::store::Result<Held<'s>> {
        match self.store {
            Store::Lmdb(s) => {
                let reader = s.reader()?;
                Ok(Held {
                    version: reader.txn_id()?,
                    reader: Reader::Lmdb(reader),
                    taken: Instant::now(),
                })
            }
            Store::Shard(s) => {
                let mut shared = self.lock_shards();
                let current = match shared.current.take() {
                    Some((r, t)) if t.elapsed() <= self.refresh && !r.needs_renewal() => (r, t),
                    old => {
                        let reader = match old {
                            // A refresh keeps the records it holds.
                            Some((mut r, _)) if !r.needs_renewal() => {
                                r.refresh()?;
                                r
                            }
                            _ => s.reader()?,
                        };
                        shared.generation += 1;
                        (reader, Instant::now())
                    }
                };
                let held = Held {
                    reader: Reader::Shard(current.0.clone()),
                    taken: current.1,
                    version: shared.generation,
                };
                shared.current = Some(current);
                Ok(held)
            }
        }
    }

    /// Records that a reply is about to go out from a snapshot of
    /// `version`.
    fn answering(&self, version: u64) {
        self.answered.fetch_max(version, Ordering::AcqRel);
    }

    /// An idle thread lets the shared snapshot go once it is old, so that
    /// it pins no unlinked shard.
    fn idle(&self) {
        if let Store::Shard(_) = self.store {
            let mut shared = self.lock_shards();
            if shared
                .current
                .as_ref()
                .is_some_and(|(_, t)| t.elapsed() > self.refresh)
            {
                shared.current = None;
            }
        }
    }
}

/// What answering a request needs, shared by the thread that owns the
/// socket and the helpers.
struct Answerer<'a, 's> {
    views: &'a Views<'s>,
    config: &'a ServeConfig,
    stats: &'a ServeStats,
    budget: &'a Arc<ReplyBudget>,
}

/// A reply ready to send: the request's envelope (routing identity, and
/// the delimiter if it had one), the status (and an `err` message), then
/// the data frames.
struct Answer {
    head: Vec<zmq::Message>,
    data: Vec<budget::Frame>,
}

impl<'s> Answerer<'_, 's> {
    /// Answers `frames` (a request with its envelope) from `held`, renewed
    /// first if it is too old (see [`Views::fresh`]).
    fn answer(&self, mut frames: Vec<zmq::Message>, held: &mut Option<Held<'s>>) -> Answer {
        let env = envelope_len(&frames);
        self.views.fresh(held);
        let (status, data) = {
            let request: Vec<&[u8]> = frames[env..].iter().map(|m| &m[..]).collect();
            let reply = match held.as_ref() {
                Some(h) => {
                    self.views.answering(h.version);
                    handle(&h.reader, &request, &self.config.limits)
                }
                None => Reply::Err("the store cannot be read right now".into()),
            };
            // The data frames, copied once into a block charged to the
            // budget (or refused when the budget is spent).
            let peer: &[u8] = &frames[0];
            match reply {
                Reply::Ok(parts) => match budget::frames(self.budget, peer, &parts) {
                    Ok(data) => (Ok(()), data),
                    Err(refusal) => (Err(refusal.to_string()), Vec::new()),
                },
                Reply::Err(msg) => (Err(msg), Vec::new()),
            }
        };
        frames.truncate(env);
        match status {
            Ok(()) => {
                self.stats.ok.fetch_add(1, Ordering::Relaxed);
                frames.push(zmq::Message::from(&b"ok"[..]));
            }
            Err(msg) => {
                let n = self.stats.err.fetch_add(1, Ordering::Relaxed) + 1;
                log_err(n, &msg);
                frames.push(zmq::Message::from(&b"err"[..]));
                frames.push(zmq::Message::from(msg.as_bytes()));
            }
        }
        Answer { head: frames, data }
    }

    /// Nothing to do for a while: let an old snapshot go, so that it pins
    /// nothing. Only the socket's owner, idle when no request comes at
    /// all, lets the shared shard snapshot go too (`server_idle`); an idle
    /// helper says nothing of the owner, which would otherwise have to
    /// open the store afresh instead of renewing the shared snapshot.
    fn idle(&self, held: &mut Option<Held<'s>>, server_idle: bool) {
        if held
            .as_ref()
            .is_some_and(|h| h.taken.elapsed() > self.config.refresh)
        {
            *held = None;
        }
        if server_idle {
            self.views.idle();
        }
    }
}

/// Requests waiting for a helper thread.
#[derive(Default)]
struct Pool {
    state: Mutex<PoolState>,
    ready: Condvar,
}

#[derive(Default)]
struct PoolState {
    jobs: VecDeque<Vec<zmq::Message>>,
    stop: bool,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // A queue and a flag, consistent after every statement.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, job: Vec<zmq::Message>) {
        self.lock().jobs.push_back(job);
        self.ready.notify_one();
    }

    /// Tells the helpers to finish; they leave what is queued.
    fn stop(&self) {
        self.lock().stop = true;
        self.ready.notify_all();
    }

    /// The next request, waiting up to `wait`: `Ok(None)` when none came,
    /// `Err(())` when the helpers are to stop.
    fn next(&self, wait: Duration) -> std::result::Result<Option<Vec<zmq::Message>>, ()> {
        let mut st = self.lock();
        if st.jobs.is_empty() && !st.stop {
            st = self
                .ready
                .wait_timeout(st, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        if st.stop {
            return Err(());
        }
        Ok(st.jobs.pop_front())
    }
}

/// What the socket's owner holds of its helpers: their queue, their
/// answers, and the read end of the socket pair they wake it with.
struct Helpers<'a> {
    pool: &'a Pool,
    done: mpsc::Receiver<Answer>,
    wake: &'a UnixStream,
}

impl Helpers<'_> {
    /// Reads the wake-up bytes that are waiting (the answers themselves
    /// are in `done`).
    fn drain_wakes(&self) {
        let mut buf = [0u8; 256];
        while matches!((&*self.wake).read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// Whether a request goes to a helper: listings, `info`, and gets of
/// more than [`OFFLOAD_KEYS`] keys. The rest cost less than handing them
/// over.
fn heavy(frames: &[zmq::Message]) -> bool {
    let env = envelope_len(frames);
    match frames.get(env).map(|m| &m[..]) {
        Some(b"get") => frames.len() - env > OFFLOAD_KEYS,
        Some(b"keys" | b"plan" | b"info") => true,
        _ => false,
    }
}

/// A helper thread: answers the requests the owner hands it, each from its
/// own snapshot, and wakes the owner to send the reply.
fn helper<'s>(
    pool: &Pool,
    answerer: &Answerer<'_, 's>,
    done: mpsc::Sender<Answer>,
    waker: &UnixStream,
) {
    let mut held: Option<Held<'s>> = None;
    loop {
        match pool.next(Duration::from_millis(100)) {
            Err(()) => return,
            Ok(None) => answerer.idle(&mut held, false),
            Ok(Some(job)) => {
                let answer = answerer.answer(job, &mut held);
                if done.send(answer).is_err() {
                    return;
                }
                // A full socket buffer already holds a wake-up: nothing lost.
                let _ = (&*waker).write(&[1]);
            }
        }
    }
}
