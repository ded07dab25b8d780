//! `tenstore get STORE KEY`

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use crate::filename::{prepare_dir, safe_file_name, write_file};
use crate::keys;
use crate::report::{print_tensors, TensorInfo};
use crate::stores;
use crate::CliResult;

/// Show or extract one sample.
///
/// KEY is in the escaped form `ls` prints (`\\` for a backslash, `\xHH`
/// for a byte that is not printable UTF-8). By default a table of its
/// tensors; `--json` prints {"key", "tensors": [{"name", "dtype", "shape",
/// "nbytes", "sha256"}], "key_hex"} (key escaped, key_hex its bytes);
/// `-o FILE.ten` (or `-o -` for stdout) writes the stored tenbin buffer
/// byte for byte (for a shard store, the sample's tensors without its key
/// array: the bytes `put` was given); `--npy DIR` writes one NAME.npy per
/// tensor (an unnamed tensor is _INDEX.npy, and a name that repeats within
/// the sample gets _INDEX appended).
#[derive(clap::Args)]
pub struct Args {
    /// The store directory.
    store: PathBuf,
    /// The sample's key (escaped as `ls` prints it).
    key: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Write the sample's tenbin buffer to this file, or - for stdout.
    #[arg(short = 'o', long = "output", value_name = "OUT.ten|-")]
    output: Option<PathBuf>,
    /// Write one .npy file per tensor into this directory.
    #[arg(long, value_name = "DIR")]
    npy: Option<PathBuf>,
    /// With --npy: write into a non-empty DIR, replacing files of the same
    /// names.
    #[arg(long, requires = "npy")]
    force: bool,
}

#[derive(Serialize)]
struct SampleInfo {
    key: String,
    tensors: Vec<TensorInfo>,
    key_hex: String,
}

pub fn run(args: Args) -> CliResult {
    let store = stores::open_read(&args.store)?;
    let reader = store.reader()?;
    let key = keys::parse(&args.key)?;
    // A sample leaving the store is checked as a scan checks it (a shard
    // record's crc32c), whatever a random get in the library does.
    let sample = match reader.require_checked(&key) {
        Err(e) => match stores::check_skipped(&reader) {
            Err(damage) => return Err(format!("{e}; {damage}").into()),
            Ok(()) => return Err(e.into()),
        },
        Ok(s) => s,
    };
    if let Some(out) = &args.output {
        if out.as_os_str() == "-" {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(sample.as_bytes())?;
            stdout.flush()?;
        } else {
            std::fs::write(out, sample.as_bytes())
                .map_err(|e| format!("{}: {e}", out.display()))?;
        }
    }
    if let Some(dir) = &args.npy {
        prepare_dir(dir, args.force)?;
        let mut taken = std::collections::HashSet::new();
        for (i, t) in sample.iter().enumerate() {
            // NAME.npy; unnamed tensors are _INDEX.npy; a name already
            // taken in this sample gets _INDEX appended until it is free.
            let mut stem = if t.name().is_empty() {
                format!("_{i}")
            } else {
                t.name().to_owned()
            };
            while !taken.insert(stem.clone()) {
                stem = format!("{stem}_{i}");
            }
            let name = safe_file_name(stem.as_bytes(), ".npy")?;
            let bytes = tenstore::npy::to_bytes(&t)
                .map_err(|e| format!("tensor {i} ({:?}): {e}", t.name()))?;
            write_file(dir, &name, &bytes, args.force)?;
        }
    }
    if args.output.as_ref().is_some_and(|o| o.as_os_str() == "-")
        || (args.npy.is_some() && !args.json)
    {
        return Ok(stores::check_skipped(&reader)?);
    }
    let info = SampleInfo {
        key: keys::escape(&key),
        key_hex: keys::hex(&key),
        tensors: sample.iter().map(|t| TensorInfo::of(&t)).collect(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&info)?);
    } else if args.output.is_none() {
        print_tensors(&info.key, &info.tensors);
    }
    Ok(stores::check_skipped(&reader)?)
}
