//! `tenstore push STORE --bind ADDR`

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

use tenstore::serve::PushConfig;
use tenstore::store::Order;

use crate::stores;
use crate::CliResult;

/// Stream every sample on a ZeroMQ PUSH socket, tensorcom style: one
/// multipart message per sample, header and data frames of its tensors
/// (decode with webdataset's tenbin.decode_list). For loaders that want a
/// stream rather than random access. Prints the endpoint on its first
/// line; blocks while no puller is connected; exits when done or on
/// Ctrl-C / SIGTERM.
#[derive(clap::Args)]
pub struct Args {
    /// The store directory (either backend).
    store: PathBuf,
    /// Where to bind the PUSH socket; tcp://HOST:* picks a free port.
    #[arg(long)]
    bind: String,
    /// Shuffle each epoch (seed + epoch number fixes the order).
    #[arg(long)]
    shuffle: bool,
    /// Seed of the shuffle.
    #[arg(long, default_value_t = 0, requires = "shuffle")]
    seed: u64,
    /// How many passes over the store.
    #[arg(long, default_value_t = 1)]
    epochs: u64,
}

pub fn run(args: Args) -> CliResult {
    let store = stores::open_read(&args.store)?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let order = if args.shuffle {
        Order::Shuffled(args.seed)
    } else {
        Order::Written
    };
    let sent = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    {
        let (stop, sent) = (stop.clone(), sent.clone());
        // The pushing thread may block on a puller (or, at the end, on
        // delivering what is queued); the main thread watches for a stop.
        std::thread::spawn(move || {
            let config = PushConfig {
                bind: args.bind,
                order,
                epochs: args.epochs,
            };
            let r = tenstore::serve::push(&store, &config, &stop, &sent, |endpoint| {
                println!("tenstore push: pushing on {endpoint}");
                let _ = std::io::stdout().flush();
            });
            let _ = done_tx.send(r.map_err(|e| e.to_string()));
        });
    }
    loop {
        match done_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(result) => {
                result?;
                break;
            }
            Err(RecvTimeoutError::Disconnected) => return Err("the pushing thread died".into()),
            Err(RecvTimeoutError::Timeout) if stop.load(Ordering::Acquire) => {
                // Give the thread a moment to notice; then stop regardless
                // of samples still queued for a slow puller.
                if let Ok(result) = done_rx.recv_timeout(Duration::from_millis(500)) {
                    result?;
                }
                break;
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
    println!(
        "tenstore push: sent {} samples",
        sent.load(Ordering::Relaxed)
    );
    let _ = std::io::stdout().flush();
    if stop.load(Ordering::Acquire) {
        // Queued samples of a stopped push are dropped on purpose: do not
        // wait for the PUSH socket to deliver them.
        std::process::exit(0);
    }
    Ok(())
}
