//! `tenstore push STORE (--bind ADDR | --connect ADDR)...`

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

use tenstore::plan::{EpochPlan, PlanConfig, Shuffle, Uneven};
use tenstore::serve::{Attached, Compat, Pattern, PushConfig};

use crate::stores;
use crate::CliResult;

/// Stream every sample on a ZeroMQ PUSH socket, tensorcom style: one
/// multipart message per sample, header and data frames of its tensors
/// (decode with webdataset's tenbin.decode_list), or one tenbin buffer
/// with --single. For loaders that want a stream rather than random
/// access. Each epoch follows an epoch plan (seed, epoch, shuffle; this
/// rank's share of WORLD ranks). Prints where it sends, one line per
/// address; blocks while no puller is connected; exits when done or on
/// Ctrl-C / SIGTERM.
///
/// tensorcom receivers: `Connection("zrpull://HOST:PORT")` for --bind,
/// `Connection("zpull://HOST:PORT")` (it binds) for --connect,
/// `Connection("zsub://HOST:PORT")` for --pub; add `multipart=False` for
/// --single. Tensors tensorcom and webdataset 1.0.2 cannot decode (0-d
/// arrays, u4, b1, bf16, c8, c16) are sent with a warning per tensor name;
/// --compat reference refuses them before sending anything.
#[derive(clap::Args)]
pub struct Args {
    /// The store directory (either backend).
    store: PathBuf,
    /// Bind the socket here (repeatable); tcp://HOST:* picks a free port.
    #[arg(long, value_name = "ADDR", required_unless_present = "connect")]
    bind: Vec<String>,
    /// Connect the socket to a receiver that binds, e.g. a tensorcom
    /// zpull:// trainer (repeatable; messages go round robin).
    #[arg(long, value_name = "ADDR")]
    connect: Vec<String>,
    /// Send each message as one frame holding a tenbin buffer (tensorcom's
    /// multipart=False) instead of header and data frames.
    #[arg(long)]
    single: bool,
    /// A PUB socket instead of PUSH, for tensorcom's zsub:// receivers
    /// (tensormon, tensorstat, tensorshow). Every subscriber gets every
    /// message, but PUB never waits: a subscriber more than --hwm messages
    /// behind (default 1000) loses messages, and one that connects late
    /// misses the earlier ones (see --subscribers).
    #[arg(long = "pub")]
    publish: bool,
    /// With --pub: wait for this many subscribers before sending.
    #[arg(long, default_value_t = 0, requires = "publish")]
    subscribers: usize,
    /// Messages queued per peer: a PUSH send waits beyond it (default 64),
    /// a PUB subscriber loses messages beyond it (default 1000).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    hwm: Option<i32>,
    /// Stack N samples' same-named tensors into one message along a new
    /// first axis, as tensorcom's senders do (it counts len(first tensor)
    /// as the batch size); samples whose tensor names, dtypes or shapes
    /// differ are refused (exit 1). The last message may hold fewer.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    batch: u64,
    /// Add each sample's key as a u1 tensor of this name (with --batch, a
    /// [N, longest key] array, shorter keys padded with zero bytes), so a
    /// receiver knows what it got; `tenstore pull --key-tensor NAME` takes
    /// it back.
    #[arg(long, value_name = "NAME")]
    key_tensor: Option<String>,
    /// `warn`: send tensors tensorcom and webdataset 1.0.2 cannot decode,
    /// warning once per tensor name; `reference`: refuse the push up front
    /// (a pass over the store) if any sample holds one.
    #[arg(long, default_value = "warn", value_name = "warn|reference")]
    compat: Compat,
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
                connect: args.connect,
                pattern: if args.publish {
                    Pattern::Pub
                } else {
                    Pattern::Push
                },
                single: args.single,
                batch: args.batch as usize,
                key_tensor: args.key_tensor,
                compat: args.compat,
                hwm: args.hwm,
                subscribers: args.subscribers,
                plan: config,
                epochs: args.epochs,
                resume: args.resume,
            };
            let verb = if args.publish {
                "publishing"
            } else {
                "pushing"
            };
            let r = tenstore::serve::push(
                &store,
                &config,
                &stop,
                &sent,
                |attached| {
                    for a in attached {
                        match a {
                            Attached::Bound(ep) => println!("tenstore push: {verb} on {ep}"),
                            Attached::Connected(addr) => {
                                println!("tenstore push: {verb} to {addr} (connecting)")
                            }
                        }
                    }
                    let _ = std::io::stdout().flush();
                },
                |warning| eprintln!("tenstore: warning: {warning}"),
            );
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
