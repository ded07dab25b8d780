//! `tenstore serve STORE`

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tenstore::net::{Limits, ServeConfig, Server};

use crate::stores;
use crate::CliResult;

/// Serve random-access samples to data loaders over ZeroMQ.
///
/// A ROUTER socket answers REQ and DEALER clients (a DEALER sends an empty
/// frame first, as REQ does, or no envelope at all). Requests and replies,
/// all replies starting with a status frame:
///
///   get KEY [KEY ...]               -> ok V [V ...]    (tenbin buffers)
///   getm KEY                        -> ok H D H D ...  (multipart frames)
///   len                             -> ok N
///   keys [PREFIX [AFTER [LIMIT]]]   -> ok K K ...      (key order, AFTER exclusive, LIMIT 10000)
///   info                            -> ok JSON         ({"backend", "samples", "bytes"})
///   anything else                   -> err MESSAGE
///
/// Listens on loopback unless told otherwise. Prints the endpoint on its
/// first line. Ctrl-C or SIGTERM stops taking requests, answers those in
/// flight and exits 0.
#[derive(clap::Args)]
pub struct Args {
    /// The store directory (either backend).
    store: PathBuf,
    /// Where to listen; tcp://HOST:* picks a free port.
    #[arg(long, default_value = "tcp://127.0.0.1:5555")]
    bind: String,
    /// Worker threads (1 to 256).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// Largest request frame in bytes (a client sending more is cut off).
    #[arg(long, default_value_t = 64 << 10)]
    max_frame: usize,
    /// Most keys in one get (1 to 1,000,000).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_keys: u32,
    /// Largest reply in bytes.
    #[arg(long, default_value_t = 256 << 20)]
    max_reply: usize,
}

pub fn run(args: Args) -> CliResult {
    let store = stores::open_read(&args.store)?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let config = ServeConfig {
        bind: args.bind.clone(),
        threads: usize::from(args.threads),
        limits: Limits {
            max_frame_bytes: args.max_frame,
            max_frames: args.max_keys as usize + 1,
            max_reply_bytes: args.max_reply,
            ..Limits::default()
        },
        refresh: Duration::from_millis(100),
        ..ServeConfig::default()
    };
    let server = Server::bind(store.clone(), config)?;
    let loopback = server.endpoint().contains("127.0.0.1")
        || server.endpoint().contains("[::1]")
        || server.endpoint().starts_with("ipc://")
        || server.endpoint().starts_with("inproc://");
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
        args.threads
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
