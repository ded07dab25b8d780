//! `tenstore ls STORE [PREFIX]`

use std::io::Write;
use std::path::PathBuf;

use crate::stores;
use crate::CliResult;

/// List keys, one per line, in key order.
///
/// With PREFIX only keys starting with it. `--long` adds, tab-separated,
/// the sample's tensor count and its stored size in bytes.
#[derive(clap::Args)]
pub struct Args {
    /// The store directory.
    store: PathBuf,
    /// Only keys that start with this.
    prefix: Option<String>,
    /// Add tensor count and bytes.
    #[arg(short, long)]
    long: bool,
}

pub fn run(args: Args) -> CliResult {
    let store = stores::open_read(&args.store)?;
    let reader = store.reader()?;
    let entries = match &args.prefix {
        Some(p) => reader.iter_prefix(p.as_bytes())?,
        None => reader.iter()?,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for entry in entries.raw() {
        let (key, value) = entry?;
        let key = String::from_utf8_lossy(key);
        let written = if args.long {
            let tensors =
                tenstore::Tensors::parse(value).map_err(|e| format!("sample {key:?}: {e}"))?;
            writeln!(out, "{key}\t{}\t{}", tensors.len(), value.len())
        } else {
            writeln!(out, "{key}")
        };
        match written {
            // A closed pipe (`| head`) ends the listing quietly.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other?,
        }
    }
    match out.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
