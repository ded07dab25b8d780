//! `tenstore export STORE DIR`

use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::filename::{key_file_name, prepare_dir, write_file};
use crate::keys;
use crate::progress::Progress;
use crate::stores;
use crate::CliResult;

/// Name of the file that maps shortened file names back to their keys.
pub const NAMES_FILE: &str = "shortened-keys.json";

/// Write one KEY.ten file per sample into DIR (made if missing).
///
/// Each file holds the sample's tenbin buffer byte for byte. Keys
/// become file names with every byte other than letters, digits, `-`, `_`
/// and inner `.` written as %XX, so no key can name a file outside DIR.
/// A name that would pass 200 bytes is cut and ends in `~` and a hash of
/// the key; `shortened-keys.json` in DIR then lists each such file with its
/// key. DIR must be new or empty (or give --force), and may not lie inside
/// the store.
#[derive(clap::Args)]
pub struct Args {
    /// The store directory.
    store: PathBuf,
    /// Where to write the .ten files.
    dir: PathBuf,
    /// Write into a non-empty DIR, replacing files of the same names.
    #[arg(long)]
    force: bool,
}

/// One shortened file name and the key it holds.
#[derive(Serialize)]
struct Shortened {
    file: String,
    key: String,
    key_hex: String,
}

pub fn run(args: Args) -> CliResult {
    let store = stores::open_read(&args.store)?;
    refuse_inside(&args.store, &args.dir)?;
    let reader = store.reader()?;
    prepare_dir(&args.dir, args.force)?;
    refuse_inside(&args.store, &args.dir)?;
    let mut progress = Progress::new();
    let (mut samples, mut bytes) = (0u64, 0u64);
    let mut shortened = Vec::new();
    let result = (|| -> CliResult {
        for sample in reader.samples(tenstore::store::Order::Key)? {
            let sample = sample?;
            let (key, value) = (sample.key(), sample.as_bytes());
            let (name, short) = key_file_name(key, ".ten");
            write_file(&args.dir, &name, value, args.force)?;
            if short {
                shortened.push(Shortened {
                    file: name,
                    key: keys::escape(key),
                    key_hex: keys::hex(key),
                });
            }
            samples += 1;
            bytes += value.len() as u64;
            progress.update(samples, bytes);
        }
        Ok(())
    })();
    progress.finish();
    // The names file lists what was written, also after a failure.
    let names = if shortened.is_empty() {
        Ok(())
    } else {
        serde_json::to_vec_pretty(&shortened)
            .map_err(|e| e.to_string())
            .and_then(|json| write_file(&args.dir, NAMES_FILE, &json, args.force))
    };
    let wrote = format!(
        "{samples} samples ({:.1} MB) to {}{}",
        bytes as f64 / 1e6,
        args.dir.display(),
        if shortened.is_empty() {
            String::new()
        } else {
            format!(
                "; {} long keys have shortened file names, listed in {NAMES_FILE}",
                shortened.len()
            )
        }
    );
    if let Err(e) = result {
        return Err(format!("{e}; export stopped after writing {wrote}").into());
    }
    names.map_err(|e| format!("{e}; exported {wrote}, but not the list of shortened names"))?;
    println!("exported {wrote}");
    Ok(())
}

/// Refuses a `dir` equal to or inside `store`, comparing real paths (the
/// part of `dir` that does not exist yet taken as written).
fn refuse_inside(store: &Path, dir: &Path) -> Result<(), String> {
    if stores::is_url(store) {
        return Ok(());
    }
    let store_real = store
        .canonicalize()
        .map_err(|e| format!("{}: {e}", store.display()))?;
    let dir_real = real_path(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if dir_real.starts_with(&store_real) {
        return Err(format!(
            "{} is inside the store {}: export into a directory outside it",
            dir.display(),
            store.display()
        ));
    }
    Ok(())
}

/// `path` with its longest existing ancestor resolved and the rest
/// appended lexically (`.` dropped, `..` taking one component off).
fn real_path(path: &Path) -> std::io::Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    let mut base = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        match base.canonicalize() {
            Ok(mut real) => {
                for c in rest.iter().rev() {
                    match c {
                        Component::ParentDir => {
                            real.pop();
                        }
                        Component::Normal(n) => real.push(n),
                        _ => {}
                    }
                }
                return Ok(real);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let Some(parent) = base.parent() else {
                    return Err(e);
                };
                rest.push(base.components().next_back().unwrap_or(Component::CurDir));
                base = parent;
            }
            Err(e) => return Err(e),
        }
    }
}
