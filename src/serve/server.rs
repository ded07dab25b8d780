//! `tenstore serve`: a ZeroMQ ROUTER in front of worker threads that
//! answer from read snapshots of one generation (see [`Views`]), with the
//! reply bytes waiting for clients bounded (see `budget`).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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
    /// Worker threads. Default 4.
    pub threads: usize,
    /// How long the workers may answer from one snapshot before taking a
    /// new one (so new samples become visible); an idle worker lets its
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

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            bind: "tcp://127.0.0.1:5555".into(),
            threads: 4,
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

/// Requests handed to the workers and not yet answered, at most; more
/// wait in libzmq's queues of their clients. Below libzmq's 1,000-message
/// high-water marks of the worker sockets, so that neither the proxy nor a
/// worker ever blocks on a full queue.
const MAX_IN_FLIGHT: usize = 256;

/// A server bound and ready: [`Server::endpoint`] says where.
pub struct Server {
    ctx: zmq::Context,
    frontend: zmq::Socket,
    backend: zmq::Socket,
    endpoint: String,
    backend_addr: String,
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

static NEXT_BACKEND: AtomicU64 = AtomicU64::new(0);

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
        let backend = ctx
            .socket(zmq::DEALER)
            .map_err(|e| ServeError::zmq("making the worker socket", e))?;
        backend
            .set_linger(0)
            .map_err(|e| ServeError::zmq("setting linger", e))?;
        let backend_addr = format!(
            "inproc://tenstore-workers-{}-{}",
            std::process::id(),
            NEXT_BACKEND.fetch_add(1, Ordering::Relaxed)
        );
        backend
            .bind(&backend_addr)
            .map_err(|e| ServeError::zmq("binding the worker socket", e))?;
        Ok(Server {
            ctx,
            frontend,
            backend,
            loopback: is_loopback_endpoint(&endpoint),
            endpoint,
            backend_addr,
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
    pub fn run(self, stop: &AtomicBool) -> Result<()> {
        let views = Views::new(&self.store, self.config.refresh);
        let workers_stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let start = || -> Result<()> {
                for i in 0..self.config.threads.max(1) {
                    let socket = self
                        .ctx
                        .socket(zmq::DEALER)
                        .map_err(|e| ServeError::zmq("making a worker socket", e))?;
                    socket
                        .set_linger(0)
                        .map_err(|e| ServeError::zmq("setting linger", e))?;
                    socket
                        .connect(&self.backend_addr)
                        .map_err(|e| ServeError::zmq("connecting a worker", e))?;
                    let shared = Shared {
                        views: &views,
                        config: &self.config,
                        stats: &self.stats,
                        budget: &self.budget,
                        stop: &workers_stop,
                    };
                    std::thread::Builder::new()
                        .name(format!("tenstore-worker-{i}"))
                        .spawn_scoped(s, move || worker(socket, shared))
                        .map_err(|e| ServeError::io("starting a worker thread", e))?;
                }
                Ok(())
            };
            let result = start().and_then(|()| self.proxy(stop));
            // The scope joins the workers when they see this.
            workers_stop.store(true, Ordering::Release);
            result
        })
    }

    /// Moves requests to the workers and replies back, until stopped.
    fn proxy(&self, stop: &AtomicBool) -> Result<()> {
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
                        .frontend
                        .set_linger(i32::try_from(left.as_millis()).unwrap_or(i32::MAX));
                    return Ok(());
                }
            }
            let mut items = [
                self.frontend
                    .as_poll_item(if stopping.is_some() || in_flight >= MAX_IN_FLIGHT {
                        zmq::PollEvents::empty()
                    } else {
                        zmq::POLLIN
                    }),
                self.backend.as_poll_item(zmq::POLLIN),
            ];
            match zmq::poll(&mut items, 100) {
                Ok(_) => {}
                // A signal (the stop request itself, usually): look again.
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(ServeError::zmq("polling", e)),
            }
            if items[0].is_readable() {
                match self.read_request()? {
                    Some(frames) => {
                        send_all(&self.backend, frames)?;
                        in_flight += 1;
                    }
                    None => {
                        self.stats.err.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if items[1].is_readable() {
                let frames = recv_all(&self.backend, usize::MAX)?.0;
                self.send_reply(frames)?;
                in_flight = in_flight.saturating_sub(1);
            }
        }
    }

    /// Reads one request from the front. A request with too many frames
    /// is drained and answered `err` here; returns `None` then.
    fn read_request(&self) -> Result<Option<Vec<zmq::Message>>> {
        // Identity, delimiter, command and keys.
        let max = self.config.limits.max_frames + 2;
        let (frames, dropped) = recv_all(&self.frontend, max)?;
        if dropped == 0 {
            return Ok(Some(frames));
        }
        let env = envelope_len(&frames);
        let total = frames.len() + dropped - env;
        let mut reply: Vec<zmq::Message> = frames.into_iter().take(env).collect();
        reply.push(zmq::Message::from(&b"err"[..]));
        reply.push(zmq::Message::from(
            format!(
                "request has {total} frames; at most {} are allowed",
                self.config.limits.max_frames
            )
            .as_bytes(),
        ));
        self.send_reply(reply)?;
        Ok(None)
    }

    /// Sends a reply to the front without blocking. A reply to a client
    /// that has left, or that has [`ServeConfig::peer_send_hwm`] replies
    /// unread, is dropped (its memory is freed at once) and counted.
    fn send_reply(&self, frames: Vec<zmq::Message>) -> Result<()> {
        let last = frames.len().saturating_sub(1);
        let mut frames = frames.into_iter();
        let Some(identity) = frames.next() else {
            return Ok(());
        };
        let more = if last > 0 { zmq::SNDMORE } else { 0 };
        // The routing frame decides: sent, or refused as a whole.
        loop {
            match self.frontend.send(&identity[..], more | zmq::DONTWAIT) {
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
        for (i, f) in frames.enumerate() {
            let flags = if i + 1 < last { zmq::SNDMORE } else { 0 };
            self.frontend
                .send(f, flags | zmq::DONTWAIT)
                .map_err(|e| ServeError::zmq("sending a reply", e))?;
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

/// Receives one multipart message, keeping at most `max` frames and
/// counting (and dropping) the rest.
fn recv_all(socket: &zmq::Socket, max: usize) -> Result<(Vec<zmq::Message>, usize)> {
    let mut frames = Vec::new();
    let mut dropped = 0;
    loop {
        let msg = socket
            .recv_msg(0)
            .map_err(|e| ServeError::zmq("receiving", e))?;
        let more = msg.get_more();
        if frames.len() < max {
            frames.push(msg);
        } else {
            dropped += 1;
        }
        if !more {
            return Ok((frames, dropped));
        }
    }
}

/// Sends a multipart message. The messages move into libzmq, no copy.
/// (A send interrupted by a signal loses its message; sends here block
/// only when a peer's queue is full, so that needs a signal then.)
fn send_all(socket: &zmq::Socket, frames: Vec<zmq::Message>) -> Result<()> {
    let last = frames.len().saturating_sub(1);
    for (i, f) in frames.into_iter().enumerate() {
        let flags = if i < last { zmq::SNDMORE } else { 0 };
        socket
            .send(f, flags)
            .map_err(|e| ServeError::zmq("sending", e))?;
    }
    Ok(())
}

/// Logs an `err` reply to stderr, sparingly: the first 20, then every
/// 1,000th, so a flood of bad requests cannot flood the log.
fn log_err(count: u64, msg: &str) {
    if count <= 20 || count.is_multiple_of(1000) {
        eprintln!("tenstore serve: request #{count} refused: {msg}");
    }
}

/// A worker's snapshot and the version of the store it shows.
struct Held<'s> {
    reader: Reader<'s>,
    taken: Instant,
    /// LMDB: the snapshot's transaction id; shards: the generation of the
    /// shared snapshot. A snapshot taken later never has a smaller one.
    version: u64,
}

/// What the workers share so that no client sees the store go backwards
/// (a key listed by one worker and then missing at the next): every reply
/// is answered from a snapshot at least as new as any reply sent before.
///
/// Shard snapshots own their maps and can be cloned: workers answer from
/// clones of one current snapshot, renewed (incrementally) by the first
/// worker that finds it older than `refresh`. LMDB read transactions
/// cannot be shared between threads (heed's `RoTxn` is `Send`, not `Sync`:
/// LMDB updates a transaction's state while reading), so each worker holds
/// its own, and `answered` (the newest transaction id any reply was
/// answered from) makes a worker whose snapshot is older take a new one
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
        if held
            .as_ref()
            .is_some_and(|h| h.taken.elapsed() <= self.refresh && h.version >= newest)
        {
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
                    Some((r, t)) if t.elapsed() <= self.refresh => (r, t),
                    old => {
                        let reader = match old {
                            Some((mut r, _)) => {
                                r.refresh()?;
                                r
                            }
                            None => s.reader()?,
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

    /// An idle worker lets the shared snapshot go once it is old, so that
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

/// What a worker thread borrows from the server.
struct Shared<'a, 's> {
    views: &'a Views<'s>,
    config: &'a ServeConfig,
    stats: &'a ServeStats,
    budget: &'a Arc<ReplyBudget>,
    stop: &'a AtomicBool,
}

fn worker<'s>(mut socket: zmq::Socket, shared: Shared<'_, 's>) {
    let Shared {
        views,
        config,
        stats,
        budget,
        stop,
    } = shared;
    let mut held: Option<Held<'s>> = None;
    while !stop.load(Ordering::Acquire) {
        match socket.poll(zmq::POLLIN, 100) {
            Err(zmq::Error::EINTR) => continue,
            Ok(0) => {
                // Idle: let an old snapshot go, so it pins nothing.
                if held
                    .as_ref()
                    .is_some_and(|h| h.taken.elapsed() > config.refresh)
                {
                    held = None;
                }
                views.idle();
                continue;
            }
            Ok(_) => {}
            Err(_) => return,
        }
        let Ok((frames, _)) = recv_all(&socket, usize::MAX) else {
            return;
        };
        let env = envelope_len(&frames);
        views.fresh(&mut held);
        let request: Vec<&[u8]> = frames.iter().skip(env).map(|m| &m[..]).collect();
        let reply = match &held {
            Some(h) => {
                views.answering(h.version);
                handle(&h.reader, &request, &config.limits)
            }
            None => Reply::Err("the store cannot be read right now".into()),
        };
        // The data frames, copied once into a block charged to the budget
        // (or refused when the budget is spent).
        let peer: &[u8] = &frames[0];
        let (status, data) = match reply {
            Reply::Ok(parts) => {
                let parts: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
                match budget::frames(budget, peer, &parts) {
                    Ok(data) => (Ok(()), data),
                    Err(refusal) => (Err(refusal.to_string()), Vec::new()),
                }
            }
            Reply::Err(msg) => (Err(msg), Vec::new()),
        };
        let mut head: Vec<zmq::Message> = frames
            .iter()
            .take(env)
            .map(|m| zmq::Message::from(&m[..]))
            .collect();
        match status {
            Ok(()) => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                head.push(zmq::Message::from(&b"ok"[..]));
            }
            Err(msg) => {
                let n = stats.err.fetch_add(1, Ordering::Relaxed) + 1;
                log_err(n, &msg);
                head.push(zmq::Message::from(&b"err"[..]));
                head.push(zmq::Message::from(msg.as_bytes()));
            }
        }
        if !send_reply_frames(&mut socket, head, data) {
            return;
        }
    }
}

/// Sends a reply's head (envelope, status, any err message) and its data
/// frames as one multipart message to the proxy; false when the socket
/// failed (the context is ending).
fn send_reply_frames(
    socket: &mut zmq::Socket,
    head: Vec<zmq::Message>,
    data: Vec<budget::Frame>,
) -> bool {
    let (n_head, n_data) = (head.len(), data.len());
    for (i, f) in head.into_iter().enumerate() {
        let more = i + 1 < n_head || n_data > 0;
        if socket.send(f, if more { zmq::SNDMORE } else { 0 }).is_err() {
            return false;
        }
    }
    for (i, f) in data.into_iter().enumerate() {
        if f.send(socket, if i + 1 < n_data { zmq::SNDMORE } else { 0 })
            .is_err()
        {
            return false;
        }
    }
    true
}
