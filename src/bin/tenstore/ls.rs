//! `tenstore ls STORE [PREFIX]`

use std::io::Write;
use std::path::PathBuf;

use crate::keys;
use crate::stores;
use crate::CliResult;

/// List keys, one per line, in key order.
///
/// Keys are printed escaped: `\\` for a backslash, `\xHH` for each byte
/// that is not printable UTF-8 (control characters, invalid UTF-8); `get`,
/// `rm` and `put` read keys in the same form. With PREFIX (escaped the same
/// way) only keys starting with it. `--long` adds, tab-separated,
/// the sample's tensor count and the size of its tenbin buffer in bytes.
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
    let prefix = keys::parse(args.prefix.as_deref().unwrap_or(""))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for key in reader.keys(&prefix, None)? {
        let key = key?;
        let written = if args.long {
            let sample = reader.require(key)?;
            writeln!(
                out,
                "{}\t{}\t{}",
                keys::escape(key),
                sample.len(),
                sample.as_bytes().len()
            )
        } else {
            writeln!(out, "{}", keys::escape(key))
        };
        match written {
            // A closed pipe (`| head`) ends the listing quietly.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other?,
        }
    }
    match out.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        other => other?,
    }
    Ok(stores::check_skipped(&reader)?)
}
