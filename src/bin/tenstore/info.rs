//! `tenstore info FILE.ten`: what a file holds.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use serde::Serialize;

use crate::report::{table, TensorInfo};

/// List the tensors of a .ten file: name, dtype, shape, size and the
/// sha256 of each tensor's data bytes.
///
/// The file is read as a stream, one tensor at a time, so memory use is
/// that of the largest tensor. A malformed file is reported with the byte
/// offset or tensor index of the fault and exit status 1.
#[derive(clap::Args)]
pub struct Args {
    /// The .ten file.
    path: PathBuf,
    /// Print one JSON object: {"path", "tensors": [{"name", "dtype", "shape", "nbytes", "sha256"}]}.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct FileInfo {
    path: String,
    tensors: Vec<TensorInfo>,
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let file = File::open(&args.path).map_err(|e| format!("{}: {e}", args.path.display()))?;
    let mut stream = BufReader::with_capacity(1 << 16, file);
    let mut tensors = Vec::new();
    loop {
        let next =
            tenstore::read(&mut stream, 1).map_err(|e| format!("{}: {e}", args.path.display()))?;
        let Some(t) = next.first() else { break };
        tensors.push(TensorInfo::of(&t.view()));
    }
    let info = FileInfo {
        path: args.path.display().to_string(),
        tensors,
    };
    if args.json {
        println!("{}", serde_json::to_string(&info)?);
    } else {
        let bytes: usize = info.tensors.iter().map(|t| t.nbytes).sum();
        println!(
            "{}: {} tensors, {} data bytes",
            info.path,
            info.tensors.len(),
            bytes
        );
        print!("{}", table(&info.tensors));
    }
    Ok(())
}
