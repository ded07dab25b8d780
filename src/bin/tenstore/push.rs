//! `tenstore push STORE --bind ADDR`

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

use tenstore::plan::{EpochPlan, PlanConfig, Shuffle, Uneven};
use tenstore::serve::PushConfig;

use crate::stores;
use crate::CliResult;

/// Stream every sample on a ZeroMQ PUSH socket, tensorcom style: one
/// multipart message per sample, header and data frames of its tensors
/// (decode with webdataset's tenbin.decode_list). For loaders that want a
/// stream rather than random access. Each epoch follows an epoch plan
/// (seed, epoch, shuffle; this rank's share of WORLD ranks). Prints the
/// endpoint on its first line; blocks while no puller is connected; exits
/// when done or on Ctrl-C / SIGTERM.
#[derive(clap::Args)]
pub struct Args {
    /// The store directory (either backend).
    store: PathBuf,
    /// Where to bind the PUSH socket; tcp://HOST:* picks a free port.
    #[arg(long)]
    bind: String,
    /// Shuffle each epoch: `full` (a seeded permutation; the default when
    /// the flag has no value), `blocks:N` (blocks of N samples in storage
    /// order permuted, samples mixed within 4 blocks: long sequential
    /// reads) or `none` (storage order, the default without the flag).
    /// The order is fixed by the seed and the epoch number.
    #[arg(long, num_args = 0..=1, default_missing_value = "full", value_name = "full|blocks:N|none")]
    shuffle: Option<Shuffle>,
    /// Seed of the shuffle.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of the first epoch (each epoch has its own order).
    #[arg(long, default_value_t = 0)]
    epoch: u64,
    /// How many passes over the store: epochs EPOCH, EPOCH+1, ...
    #[arg(long, default_value_t = 1)]
    epochs: u64,
    /// This process's rank: it sends global positions RANK, RANK+WORLD, ...
    /// of each epoch's order.
    #[arg(long, default_value_t = 0)]
    rank: u64,
    /// Number of ranks (push processes) sharing each epoch.
    #[arg(long, default_value_t = 1)]
    world: u64,
    /// Resume the first epoch after this many of its global positions
    /// (the minimum over ranks of samples received, times WORLD).
    #[arg(long, default_value_t = 0)]
    resume: u64,
    /// Equal counts per rank by dropping the last n mod WORLD positions
    /// (`drop-last`) or by wrapping to the start (`pad`).
    #[arg(long, default_value = "drop-last")]
    uneven: Uneven,
}

pub fn run(args: Args) -> CliResult {
    let config = PlanConfig {
        seed: args.seed,
        epoch: args.epoch,
        shuffle: args.shuffle.unwrap_or(Shuffle::None),
        rank: args.rank,
        world_size: args.world,
        uneven: args.uneven,
        ..PlanConfig::default()
    };
    // Refuse a bad rank or world before opening anything.
    EpochPlan::new(0, config.clone())?;
    let store = stores::open_read(&args.store)?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let sent = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    {
        let (stop, sent) = (stop.clone(), sent.clone());
        // The pushing thread may block on a puller (or, at the end, on
        // delivering what is queued); the main thread watches for a stop.
        std::thread::spawn(move || {
            let config = PushConfig {
                bind: args.bind,
                plan: config,
                epochs: args.epochs,
                resume: args.resume,
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
