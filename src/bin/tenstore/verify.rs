//! `tenstore verify STORE`

use std::path::PathBuf;

use crate::stores;
use crate::CliResult;

/// Check every sample of a store: that it decodes as tenbin and, in a
/// shard store, that its bytes match the checksum committed with it (and
/// that the sidecars are whole). Prints one line per problem and exits 1
/// if there is any.
#[derive(clap::Args)]
pub struct Args {
    /// The store directory.
    store: PathBuf,
}

pub fn run(args: Args) -> CliResult {
    let store = stores::open_read(&args.store)?;
    let reader = store.reader()?;
    let samples = reader.len()?;
    let report = reader.verify()?;
    let problems = &report.problems;
    for p in problems {
        println!("{p}");
    }
    if problems.is_empty() {
        println!(
            "{}: {} samples verified, no problems",
            args.store.display(),
            samples
        );
        Ok(())
    } else {
        Err(format!(
            "{}: {} problems found in {} samples",
            args.store.display(),
            problems.len(),
            samples
        )
        .into())
    }
}
