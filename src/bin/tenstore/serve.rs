//! `tenstore serve STORE`

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tenstore::serve::{Limits, ServeConfig, Server};

use crate::stores;
use crate::CliResult;

/// Serve random-access samples to data loaders over ZeroMQ.
///
/// A ROUTER socket answers REQ and DEALER clients (a DEALER sends an empty
/// frame first, as REQ does, or no envelope at all). With one thread a
/// DEALER's replies come in the order of its requests; with more, a short
/// request may be answered before a long one sent earlier. Requests and replies,
/// all replies starting with a status frame:
///
///   get KEY [KEY ...]               -> ok V [V ...]    (tenbin buffers)
///   getm KEY                        -> ok H D H D ...  (multipart frames)
///   len                             -> ok N
///   keys [PREFIX [AFTER [LIMIT]]]   -> ok K K ...      (key order, AFTER exclusive, LIMIT 10000)
///   info                            -> ok JSON         ({"backend", "samples", "bytes"})
///   anything else                   -> err MESSAGE
///
/// Listens on loopback unless told otherwise (a host name is resolved and
/// its address bound). Prints the endpoint on its first line, and whether
/// only this host can reach it. Ctrl-C or SIGTERM stops taking requests,
/// answers those in flight and exits 0.
///
/// Replies waiting for clients to read them hold at most
/// --max-queued-bytes in all and an eighth of that per client (a client
/// with nothing unread may always get one reply); a reply that does not
/// fit is answered "err server busy: ...", and the client may retry. A
/// client that leaves 256 replies unread loses the replies after those.
#[derive(clap::Args)]
pub struct Args {
    /// The store directory (either backend).
    store: PathBuf,
    /// Where to listen; tcp://HOST:* picks a free port.
    #[arg(long, default_value = "tcp://127.0.0.1:5555")]
    bind: String,
    /// Threads that answer requests (1 to 256): the socket's own thread
    /// answers short requests (a get of up to 8 keys, getm, len), the
    /// others take listings, info and larger gets [default: the number of
    /// CPUs, 2 to 8].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    /// Largest request frame in bytes (a client sending more is cut off).
    #[arg(long, default_value_t = 64 << 10)]
    max_frame: usize,
    /// Most keys in one get (1 to 1,000,000).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_keys: u32,
    /// Largest reply in bytes [default: 268435456, or --max-queued-bytes
    /// when that is less].
    #[arg(long)]
    max_reply: Option<usize>,
    /// Most bytes of replies waiting for clients to read them, in all (at
    /// least --max-reply).
    #[arg(long, default_value_t = 1 << 30)]
    max_queued_bytes: usize,
}

pub fn run(args: Args) -> CliResult {
    let max_reply = args
        .max_reply
        .unwrap_or(Limits::default().max_reply_bytes.min(args.max_queued_bytes));
    if max_reply > args.max_queued_bytes {
        return Err(format!(
            "--max-reply {max_reply} is larger than --max-queued-bytes {}: such replies could never be sent",
            args.max_queued_bytes
        )
        .into());
    }
    let store = stores::open_read(&args.store)?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let threads = args
        .threads
        .map_or_else(ServeConfig::default_threads, usize::from);
    let config = ServeConfig {
        bind: args.bind.clone(),
        threads,
        limits: Limits {
            max_frame_bytes: args.max_frame,
            max_frames: args.max_keys as usize + 1,
            max_reply_bytes: max_reply,
            ..Limits::default()
        },
        refresh: Duration::from_millis(100),
        max_queued_bytes: args.max_queued_bytes,
        max_peer_queued_bytes: args.max_queued_bytes / 8,
        ..ServeConfig::default()
    };
    let server = Server::bind(store.clone(), config)?;
    let loopback = server.loopback_only();
    println!(
        "tenstore serve: listening on {} ({}), {} {} store with {} samples, {} workers",
        server.endpoint(),
        if loopback {
            "loopback only"
        } else {
            "reachable from other hosts"
        },
        args.store.display(),
        store.backend().name(),
        store.reader()?.len()?,
        threads
    );
    use std::io::Write;
    std::io::stdout().flush()?;
    let stats = server.stats();
    server.run(&stop)?;
    println!(
        "tenstore serve: stopped after {} ok and {} err replies",
        stats.ok.load(std::sync::atomic::Ordering::Relaxed),
        stats.err.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}
