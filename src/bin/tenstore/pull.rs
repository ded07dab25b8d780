//! `tenstore pull STORE (--bind ADDR | --connect ADDR)...`

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tenstore::serve::{KeyFormat, KeySource, PullConfig, PullEvent};
use tenstore::store::Backend;

use crate::stores;
use crate::CliResult;

/// Skipped messages reported one by one; later ones are only counted.
const SHOWN_SKIPS: u64 = 20;

/// Write a ZeroMQ stream of tenbin messages into a store, one sample per
/// message: tensorcom's senders (`Connection("zpush://HOST:PORT")`
/// connects to --bind; multipart, or one frame per message with --single)
/// or `tenstore push --bind` (pull with --connect).
///
/// Samples are keyed by a counter (--key-format, default {:08}) or by a
/// u1 tensor of the message (--key-tensor, as `push --key-tensor` adds
/// it; not stored). They are committed in batches (--commit-every
/// messages, or --commit-ms after a batch's first message), each made
/// durable before "tenstore pull: committed N samples" is printed: those
/// N survive a crash. Messages that are not tenbin, lack a usable key,
/// hold no tensors, or use a key the store holds (without --overwrite)
/// are skipped and counted; the stream goes on. Stops after --max
/// samples, or on Ctrl-C / SIGTERM after committing what it received.
#[derive(clap::Args)]
pub struct Args {
    /// The store directory (either backend).
    store: PathBuf,
    /// Bind the PULL socket here (repeatable): senders connect to it.
    #[arg(long, value_name = "ADDR", required_unless_present = "connect")]
    bind: Vec<String>,
    /// Connect the PULL socket to a sender that binds (repeatable).
    #[arg(long, value_name = "ADDR")]
    connect: Vec<String>,
    /// Take single-frame messages (tensorcom's multipart=False).
    #[arg(long)]
    single: bool,
    /// Key each sample by the u1 1-d tensor of this name in its message;
    /// that tensor is not stored.
    #[arg(long, value_name = "NAME", conflicts_with = "key_format")]
    key_tensor: Option<String>,
    /// Key each sample by a counter of the messages taken, from 0: text
    /// with one placeholder `{}`, `{:N}` or `{:0N}` (e.g. run2-{:06}; give
    /// each run its own prefix, as keys the store holds are not replaced).
    #[arg(long, value_name = "FMT", default_value = "{:08}")]
    key_format: KeyFormat,
    /// Stop after storing N samples.
    #[arg(long, value_name = "N")]
    max: Option<u64>,
    /// Make the store if it does not exist.
    #[arg(long)]
    create: bool,
    /// Backend of a new store: lmdb (default) or ten (append-only shards).
    #[arg(long, value_parser = stores::parse_backend, requires = "create")]
    backend: Option<Backend>,
    /// Samples per commit.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    commit_every: u64,
    /// Commit a batch this many milliseconds after its first message, even
    /// if it is not full.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    commit_ms: u64,
    /// Replace samples under keys the store already holds (and keep a
    /// repeated key's last message) instead of skipping them.
    #[arg(long)]
    overwrite: bool,
    /// The largest frame accepted, in bytes (ZeroMQ disconnects a sender
    /// of a larger one), and the most tensor bytes one message may hold
    /// (a larger one is refused and counted).
    #[arg(long, default_value_t = 1 << 30, value_parser = clap::value_parser!(i64).range(1..))]
    max_frame: i64,
}

pub fn run(args: Args) -> CliResult {
    let config = PullConfig {
        bind: args.bind,
        connect: args.connect,
        single: args.single,
        key: match args.key_tensor {
            Some(name) => KeySource::Tensor(name),
            None => KeySource::Format(args.key_format),
        },
        max: args.max,
        commit_every: args.commit_every as usize,
        commit_after: Duration::from_millis(args.commit_ms),
        overwrite: args.overwrite,
        max_frame: args.max_frame,
        ..PullConfig::default()
    };
    // Refuse a bad configuration before opening (or creating) the store.
    config.check()?;
    let store = stores::open(&args.store, args.create, args.backend)?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let n_bind = config.bind.len();
    let mut skipped = 0u64;
    let result = tenstore::serve::pull(&store, &config, &stop, |event| match event {
        PullEvent::Ready(attached) => {
            for (i, a) in attached.iter().enumerate() {
                if i < n_bind {
                    println!("tenstore pull: receiving on {a}");
                } else {
                    println!("tenstore pull: receiving from {a} (connecting)");
                }
            }
            let _ = std::io::stdout().flush();
        }
        PullEvent::Committed { stored } => {
            println!("tenstore pull: committed {stored} samples");
            let _ = std::io::stdout().flush();
        }
        PullEvent::Skipped { message, why } => {
            skipped += 1;
            if skipped <= SHOWN_SKIPS {
                eprintln!("tenstore pull: skipped message {message}: {why}");
            }
            if skipped == SHOWN_SKIPS {
                eprintln!("tenstore pull: further skipped messages are counted, not shown");
            }
        }
    });
    let stats = match result {
        Ok(stats) => stats,
        Err(e) => {
            return Err(format!(
                "pull stopped: {e}; the samples reported committed are stored, later ones are not"
            )
            .into())
        }
    };
    println!(
        "tenstore pull: stored {} samples from {} messages; skipped {} malformed and {} refused messages",
        stats.stored, stats.received, stats.malformed, stats.refused
    );
    Ok(())
}
