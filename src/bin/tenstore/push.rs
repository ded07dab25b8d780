//! `tenstore push STORE --bind ADDR`

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

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
    let sent = tenstore::net::push(&store, &args.bind, order, args.epochs, &stop, |endpoint| {
        println!("tenstore push: pushing on {endpoint}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    })?;
    println!("tenstore push: sent {sent} samples");
    Ok(())
}
