//! `tenstore put STORE KEY INPUT...`

use std::path::PathBuf;

use crate::inputs::read_input;
use crate::stores;
use crate::CliResult;

/// Store one sample: the tensors of every INPUT, in order, under KEY.
///
/// INPUT is a `.npy` file (the tensor is named by the file stem, or give
/// `NAME=PATH.npy`), a `.ten` file (all its tensors, names kept), or `-`
/// for a tenbin buffer on stdin. An existing sample under KEY is replaced.
/// Nothing is written unless every input reads cleanly.
#[derive(clap::Args)]
pub struct Args {
    /// The store directory.
    store: PathBuf,
    /// The sample's key.
    key: String,
    /// Inputs: PATH.npy, NAME=PATH.npy, PATH.ten or -.
    #[arg(required = true)]
    inputs: Vec<String>,
    /// Make the store if it does not exist.
    #[arg(long)]
    create: bool,
    /// Backend of a new store: lmdb (default) or ten (append-only shards).
    #[arg(long, value_parser = stores::parse_backend, requires = "create")]
    backend: Option<tenstore::store::Backend>,
}

pub fn run(args: Args) -> CliResult {
    let mut tensors = Vec::new();
    for input in &args.inputs {
        tensors.extend(read_input(input)?);
    }
    let store = stores::open(&args.store, args.create, args.backend)?;
    store.put(args.key.as_bytes(), &tensors)?;
    store.flush()?;
    Ok(())
}
