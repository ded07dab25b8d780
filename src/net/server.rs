//! `tenstore serve`: a ZeroMQ ROUTER in front of worker threads, each with
//! its own read snapshot. Also `push`, a PUSH stream of samples.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::net::error::{NetError, Result};
use crate::net::protocol::{handle, Limits, Reply};
use crate::store::{Order, Reader, Store};

/// How to serve.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Where to listen. Default `tcp://127.0.0.1:5555` (loopback only).
    pub bind: String,
    /// Worker threads, each with its own snapshot. Default 4.
    pub threads: usize,
    /// How long a worker may answer from one snapshot before taking a new
    /// one (so new samples become visible); an idle worker lets its
    /// snapshot go after this long. Default 100 ms.
    pub refresh: Duration,
    /// Request bounds.
    pub limits: Limits,
    /// How long shutdown waits for requests in flight. Default 10 s.
    pub drain: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            bind: "tcp://127.0.0.1:5555".into(),
            threads: 4,
            refresh: Duration::from_millis(100),
            limits: Limits::default(),
            drain: Duration::from_secs(10),
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
}

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
    /// Binds the front socket. A bind address with port `*` picks a free
    /// port; [`endpoint`](Self::endpoint) tells which.
    pub fn bind(store: Store, config: ServeConfig) -> Result<Server> {
        let ctx = zmq::Context::new();
        let frontend = ctx
            .socket(zmq::ROUTER)
            .map_err(|e| NetError::zmq("making the ROUTER socket", e))?;
        frontend
            .set_maxmsgsize(config.limits.max_frame_bytes as i64)
            .map_err(|e| NetError::zmq("setting ZMQ_MAXMSGSIZE", e))?;
        frontend
            .set_linger(0)
            .map_err(|e| NetError::zmq("setting linger", e))?;
        frontend
            .bind(&config.bind)
            .map_err(|e| NetError::zmq(format!("binding {}", config.bind), e))?;
        let endpoint = frontend
            .get_last_endpoint()
            .map_err(|e| NetError::zmq("reading the bound endpoint", e))?
            .unwrap_or_else(|raw| String::from_utf8_lossy(&raw).into_owned());
        let backend = ctx
            .socket(zmq::DEALER)
            .map_err(|e| NetError::zmq("making the worker socket", e))?;
        let backend_addr = format!(
            "inproc://tenstore-workers-{}-{}",
            std::process::id(),
            NEXT_BACKEND.fetch_add(1, Ordering::Relaxed)
        );
        backend
            .bind(&backend_addr)
            .map_err(|e| NetError::zmq("binding the worker socket", e))?;
        Ok(Server {
            ctx,
            frontend,
            backend,
            endpoint,
            backend_addr,
            config,
            store,
            stats: Arc::new(ServeStats::default()),
        })
    }

    /// The address clients connect to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Counters of answered requests.
    pub fn stats(&self) -> Arc<ServeStats> {
        self.stats.clone()
    }

    /// Serves until `stop` becomes true, then stops taking requests,
    /// answers those in flight (up to `drain`) and returns.
    pub fn run(self, stop: &AtomicBool) -> Result<()> {
        let workers_stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for i in 0..self.config.threads.max(1) {
            let socket = self
                .ctx
                .socket(zmq::DEALER)
                .map_err(|e| NetError::zmq("making a worker socket", e))?;
            socket
                .connect(&self.backend_addr)
                .map_err(|e| NetError::zmq("connecting a worker", e))?;
            let store = self.store.clone();
            let config = self.config.clone();
            let stats = self.stats.clone();
            let stop = workers_stop.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("tenstore-worker-{i}"))
                    .spawn(move || worker(socket, store, config, stats, stop))
                    .map_err(|e| NetError::io("starting a worker thread", e))?,
            );
        }
        let result = self.proxy(stop);
        workers_stop.store(true, Ordering::Release);
        for w in workers {
            let _ = w.join();
        }
        result
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
                    return Ok(());
                }
            }
            let mut items = [
                self.frontend.as_poll_item(if stopping.is_some() {
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
                Err(e) => return Err(NetError::zmq("polling", e)),
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
                send_all(&self.frontend, frames)?;
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
        send_all(&self.frontend, reply)?;
        Ok(None)
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
            .map_err(|e| NetError::zmq("receiving", e))?;
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
            .map_err(|e| NetError::zmq("sending", e))?;
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

fn worker(
    socket: zmq::Socket,
    store: Store,
    config: ServeConfig,
    stats: Arc<ServeStats>,
    stop: Arc<AtomicBool>,
) {
    let mut snapshot: Option<(Reader<'_>, Instant)> = None;
    while !stop.load(Ordering::Acquire) {
        match socket.poll(zmq::POLLIN, 100) {
            Err(zmq::Error::EINTR) => continue,
            Ok(0) => {
                // Idle: let an old snapshot go, so it pins nothing.
                if snapshot
                    .as_ref()
                    .is_some_and(|(_, t)| t.elapsed() > config.refresh)
                {
                    snapshot = None;
                }
                continue;
            }
            Ok(_) => {}
            Err(_) => return,
        }
        let Ok((frames, _)) = recv_all(&socket, usize::MAX) else {
            return;
        };
        let env = envelope_len(&frames);
        if snapshot
            .as_ref()
            .is_none_or(|(_, t)| t.elapsed() > config.refresh)
        {
            // The old snapshot ends before the new one begins (LMDB may need
            // every snapshot of this process closed to adopt a grown map).
            drop(snapshot.take());
            snapshot = store.reader().ok().map(|r| (r, Instant::now()));
        }
        let request: Vec<&[u8]> = frames.iter().skip(env).map(|m| &m[..]).collect();
        let reply = match &snapshot {
            Some((reader, _)) => handle(reader, &request, &config.limits),
            None => Reply::Err("the store cannot be read right now".into()),
        };
        let mut out: Vec<zmq::Message> = frames
            .iter()
            .take(env)
            .map(|m| zmq::Message::from(&m[..]))
            .collect();
        out.push(zmq::Message::from(reply.status()));
        match reply {
            Reply::Ok(parts) => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                out.extend(parts.iter().map(|p| zmq::Message::from(&p[..])));
            }
            Reply::Err(msg) => {
                let n = stats.err.fetch_add(1, Ordering::Relaxed) + 1;
                log_err(n, &msg);
                out.push(zmq::Message::from(msg.as_bytes()));
            }
        }
        if send_all(&socket, out).is_err() {
            return;
        }
    }
}

/// Streams every sample of `store`, `epochs` times, on a PUSH socket bound
/// to `bind`, as multipart tenbin frames (tensorcom style: the sample's
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
    bind: &str,
    order: Order,
    epochs: u64,
    stop: &AtomicBool,
    sent: &AtomicU64,
    ready: impl FnOnce(&str),
) -> Result<()> {
    let ctx = zmq::Context::new();
    let socket = ctx
        .socket(zmq::PUSH)
        .map_err(|e| NetError::zmq("making the PUSH socket", e))?;
    socket
        .set_sndhwm(64)
        .map_err(|e| NetError::zmq("setting ZMQ_SNDHWM", e))?;
    socket
        .set_linger(-1)
        .map_err(|e| NetError::zmq("setting linger", e))?;
    socket
        .bind(bind)
        .map_err(|e| NetError::zmq(format!("binding {bind}"), e))?;
    let endpoint = socket
        .get_last_endpoint()
        .map_err(|e| NetError::zmq("reading the bound endpoint", e))?
        .unwrap_or_default();
    ready(&endpoint);
    let stopped = |socket: &zmq::Socket| {
        // Drop what is queued: stopping means now.
        let _ = socket.set_linger(0);
        Ok(())
    };
    for epoch in 0..epochs {
        let reader = store.reader()?;
        let order = match order {
            Order::Shuffled(seed) => Order::Shuffled(seed.wrapping_add(epoch)),
            other => other,
        };
        for sample in reader.samples(order)? {
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
                    return Err(NetError::Protocol(
                        "a send was interrupted by a signal".into(),
                    ));
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
