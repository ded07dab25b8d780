//! `tenstore get STORE KEY`

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use crate::filename::safe_file_name;
use crate::report::{print_tensors, TensorInfo};
use crate::stores;
use crate::CliResult;

/// Show or extract one sample.
///
/// By default a table of its tensors; `--json` prints
/// {"key", "tensors": [{"name", "dtype", "shape", "nbytes", "sha256"}]};
/// `-o FILE.ten` (or `-o -` for stdout) writes the stored tenbin buffer
/// byte for byte (for a shard store, the sample's tensors without its key
/// array: the bytes `put` was given); `--npy DIR` writes one NAME.npy per
/// tensor (an unnamed tensor is _INDEX.npy, and a name that repeats within
/// the sample gets _INDEX appended).
#[derive(clap::Args)]
pub struct Args {
    /// The store directory.
    store: PathBuf,
    /// The sample's key.
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
}

#[derive(Serialize)]
struct SampleInfo {
    key: String,
    tensors: Vec<TensorInfo>,
}

pub fn run(args: Args) -> CliResult {
    let store = stores::open_read(&args.store)?;
    let reader = store.reader()?;
    let sample = match reader.require(args.key.as_bytes()) {
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
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
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
            let path = dir.join(safe_file_name(stem.as_bytes(), ".npy")?);
            let bytes = tenstore::npy::to_bytes(&t)
                .map_err(|e| format!("tensor {i} ({:?}): {e}", t.name()))?;
            std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    if args.output.as_ref().is_some_and(|o| o.as_os_str() == "-")
        || (args.npy.is_some() && !args.json)
    {
        return Ok(stores::check_skipped(&reader)?);
    }
    let info = SampleInfo {
        key: args.key.clone(),
        tensors: sample.iter().map(|t| TensorInfo::of(&t)).collect(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&info)?);
    } else if args.output.is_none() {
        print_tensors(&info.key, &info.tensors);
    }
    Ok(stores::check_skipped(&reader)?)
}
