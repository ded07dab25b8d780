//! `tenstore info FILE.ten | STORE`: what a file or a store holds.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::report::{print_tensors, TensorInfo};
use crate::stores;
use crate::CliResult;

/// Describe a .ten file or a store.
///
/// For a .ten file: its tensors (name, dtype, shape, size, sha256 of the
/// data bytes), read as a stream one tensor at a time. `--json` prints
/// {"path", "tensors": [{"name", "dtype", "shape", "nbytes", "sha256"}]}.
///
/// For a store directory: backend, sample count, bytes used, and the map
/// size (LMDB) or shard count (ten). `--json` prints {"path", "backend",
/// "samples", "bytes", "map_size", "shards"}.
#[derive(clap::Args)]
pub struct Args {
    /// A .ten file or a store directory.
    path: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct FileInfo {
    path: String,
    tensors: Vec<TensorInfo>,
}

#[derive(Serialize)]
struct StoreInfo {
    path: String,
    backend: &'static str,
    samples: u64,
    bytes: u64,
    map_size: u64,
    shards: u64,
}

pub fn run(args: Args) -> CliResult {
    if args.path.is_dir() || stores::is_url(&args.path) {
        store_info(&args.path, args.json)
    } else {
        file_info(&args.path, args.json)
    }
}

fn store_info(path: &Path, json: bool) -> CliResult {
    let store = stores::open_read(path)?;
    let stats = store.stats()?;
    let reader = store.reader()?;
    let info = StoreInfo {
        path: path.display().to_string(),
        backend: stats.backend.name(),
        samples: stats.samples,
        bytes: stats.bytes,
        map_size: stats.map_size,
        shards: stats.shards,
    };
    if json {
        println!("{}", serde_json::to_string(&info)?);
    } else {
        println!("{}: {} store", info.path, info.backend);
        println!("samples   {}", info.samples);
        println!(
            "bytes     {} ({:.1} MB)",
            info.bytes,
            info.bytes as f64 / 1e6
        );
        match stats.backend {
            tenstore::store::Backend::Lmdb => println!(
                "map size  {} ({:.1} MB)",
                info.map_size,
                info.map_size as f64 / 1e6
            ),
            tenstore::store::Backend::Shard => println!("shards    {}", info.shards),
        }
    }
    Ok(stores::check_skipped(&reader)?)
}

fn file_info(path: &Path, json: bool) -> CliResult {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut stream = BufReader::with_capacity(1 << 16, file);
    let mut tensors = Vec::new();
    loop {
        let next =
            tenstore::read(&mut stream, 1).map_err(|e| format!("{}: {e}", path.display()))?;
        let Some(t) = next.first() else { break };
        tensors.push(TensorInfo::of(&t.view()));
    }
    let info = FileInfo {
        path: path.display().to_string(),
        tensors,
    };
    if json {
        println!("{}", serde_json::to_string(&info)?);
    } else {
        print_tensors(&info.path, &info.tensors);
    }
    Ok(())
}
