//! `tenstore export STORE DIR`

use std::path::PathBuf;

use crate::filename::safe_file_name;
use crate::progress::Progress;
use crate::stores;
use crate::CliResult;

/// Write one KEY.ten file per sample into DIR (made if missing).
///
/// Each file holds the sample's tenbin buffer byte for byte. Keys
/// become file names with every byte other than letters, digits, `-`, `_`
/// and inner `.` written as %XX, so no key can name a file outside DIR.
#[derive(clap::Args)]
pub struct Args {
    /// The store directory.
    store: PathBuf,
    /// Where to write the .ten files.
    dir: PathBuf,
}

pub fn run(args: Args) -> CliResult {
    let store = stores::open_read(&args.store)?;
    let reader = store.reader()?;
    std::fs::create_dir_all(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    let mut progress = Progress::new();
    let (mut samples, mut bytes) = (0u64, 0u64);
    for sample in reader.samples(tenstore::store::Order::Key)? {
        let sample = sample?;
        let (key, value) = (sample.key(), sample.as_bytes());
        let path = args.dir.join(safe_file_name(key, ".ten")?);
        std::fs::write(&path, value).map_err(|e| format!("{}: {e}", path.display()))?;
        samples += 1;
        bytes += value.len() as u64;
        progress.update(samples, bytes);
    }
    progress.finish();
    println!(
        "exported {samples} samples ({:.1} MB) to {}",
        bytes as f64 / 1e6,
        args.dir.display()
    );
    Ok(())
}
