//! `tenstore put STORE KEY INPUT...`

use std::path::PathBuf;

use crate::inputs::read_input;
use crate::keys;
use crate::stores;
use crate::CliResult;

/// Store one sample: the tensors of every INPUT, in order, under KEY.
///
/// INPUT is a `.npy` file (the tensor is named by the file stem, or give
/// `NAME=PATH.npy`), a `.ten` file (all its tensors, names kept), or `-`
/// for a tenbin buffer on stdin. An existing sample under KEY is replaced.
/// Nothing is written unless every input reads cleanly. KEY is escaped as
/// `ls` prints keys (`\\`, `\xHH`). Inputs holding no tensor at all (an
/// empty .ten file, empty stdin) are refused unless --allow-empty.
#[derive(clap::Args)]
pub struct Args {
    /// The store directory.
    store: PathBuf,
    /// The sample's key (escaped as `ls` prints it).
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
    /// Store a sample with no tensors when the inputs hold none.
    #[arg(long)]
    allow_empty: bool,
}

pub fn run(args: Args) -> CliResult {
    let mut tensors = Vec::new();
    for input in &args.inputs {
        tensors.extend(read_input(input)?);
    }
    let key = keys::parse(&args.key)?;
    if tensors.is_empty() && !args.allow_empty {
        return Err(format!(
            "the inputs hold no tensors (an empty .ten file or empty stdin?); nothing stored under {:?} (--allow-empty stores an empty sample)",
            keys::escape(&key)
        )
        .into());
    }
    let store = stores::open(&args.store, args.create, args.backend)?;
    store.put(&key, &tensors)?;
    store.flush()?;
    Ok(())
}
