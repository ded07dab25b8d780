//! `tenstore rm STORE KEY...`

use std::path::PathBuf;

use crate::keys;
use crate::stores;
use crate::CliResult;

/// Remove samples. If any KEY is missing, nothing is removed and the
/// command fails.
#[derive(clap::Args)]
pub struct Args {
    /// The store directory.
    store: PathBuf,
    /// Keys to remove (escaped as `ls` prints them).
    #[arg(required = true)]
    keys: Vec<String>,
}

pub fn run(args: Args) -> CliResult {
    let store = stores::open(&args.store, false, None)?;
    let keys: Vec<Vec<u8>> = args
        .keys
        .iter()
        .map(|k| keys::parse(k))
        .collect::<Result<_, _>>()?;
    store
        .delete_exact(&keys)
        .map_err(|e| format!("{e}; nothing was removed"))?;
    store.flush()?;
    Ok(())
}
