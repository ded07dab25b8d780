//! `tenstore import STORE PATH...`: bulk loading.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use tenstore::Tensor;

use crate::inputs::check_name;
use crate::progress::Progress;
use crate::stores;
use crate::CliResult;

/// Load many samples at once from .ten and .npy files, directories of
/// them, webdataset tar shards (.tar, .tar.gz, .tgz), and other stores
/// (of either backend: `tenstore import NEW OLD` converts). Samples are
/// written in input order.
///
/// A file or tar member is named KEY.FIELD: KEY is its name up to the first
/// dot (for tar members, with the member's directory, as webdataset's
/// `__key__`), FIELD the rest. Consecutive files or members with the same
/// KEY form one sample: a FIELD of `ten` adds all tensors of that .ten
/// file; a FIELD ending in `.npy` adds one tensor named by the FIELD
/// without `.npy` (`img.npy` -> "img"; a bare `npy` -> unnamed). Other
/// members (.jpg, .cls, ...) are skipped and counted.
///
/// Every input is read and checked before anything is written, so bad
/// input changes nothing in the store. Samples are then written in
/// batches of one transaction each.
#[derive(clap::Args)]
pub struct Args {
    /// The store directory.
    store: PathBuf,
    /// Files, directories and tar shards to import.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Make the store if it does not exist.
    #[arg(long)]
    create: bool,
    /// Backend of a new store: lmdb (default) or ten (append-only shards).
    #[arg(long, value_parser = stores::parse_backend, requires = "create")]
    backend: Option<tenstore::store::Backend>,
    /// Samples per write transaction.
    #[arg(long, default_value_t = 512)]
    batch: usize,
}

/// What a pass over the inputs found.
#[derive(Default)]
struct Tally {
    samples: u64,
    tensors: u64,
    bytes: u64,
    skipped: u64,
}

pub fn run(args: Args) -> CliResult {
    let sources = collect(&args.paths)?;
    // Pass 1: read and check everything; nothing is written.
    let mut check = Tally::default();
    each_sample(&sources, &mut check, &mut |_, _| Ok(()))?;

    for source in &sources {
        if let Source::Store(path) = source {
            if same_dir(path, &args.store) {
                return Err(
                    format!("{}: cannot import a store into itself", path.display()).into(),
                );
            }
        }
    }
    let store = stores::open_bulk(&args.store, args.create, args.backend)?;
    let mut progress = Progress::new();
    let mut batch: Vec<(String, Vec<Tensor>)> = Vec::new();
    let mut written = Tally::default();
    let batch_size = args.batch.max(1);
    each_sample(&sources, &mut written, &mut |key, tensors| {
        batch.push((key, tensors));
        if batch.len() >= batch_size {
            store.put_batch(&batch)?;
            batch.clear();
        }
        Ok(())
    })?;
    store.put_batch(&batch)?;
    store.flush()?;
    progress.update(written.samples, written.bytes);
    progress.finish();
    println!(
        "imported {} samples ({} tensors, {:.1} MB of data) from {} inputs into {}{}",
        written.samples,
        written.tensors,
        written.bytes as f64 / 1e6,
        sources.len(),
        args.store.display(),
        if written.skipped > 0 {
            format!(
                "; skipped {} members that are neither .npy nor .ten",
                written.skipped
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

/// One input: a file to take as is, a tar shard, or a store.
enum Source {
    File(PathBuf),
    Tar(PathBuf),
    Store(PathBuf),
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn is_tar(path: &Path) -> bool {
    let name = path.to_string_lossy();
    name.ends_with(".tar") || name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

/// Expands directories (recursively, in sorted order) into sources.
fn collect(paths: &[PathBuf]) -> Result<Vec<Source>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.is_dir() && tenstore::store::Backend::detect(path).is_some() {
            out.push(Source::Store(path.clone()));
        } else if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            entries.sort();
            out.extend(collect(&entries)?);
        } else if is_tar(path) {
            out.push(Source::Tar(path.clone()));
        } else {
            out.push(Source::File(path.clone()));
        }
    }
    Ok(out)
}

/// Splits a file name into KEY and FIELD at its first dot.
fn split_name(name: &str) -> Option<(&str, &str)> {
    let (dir, base) = match name.rfind('/') {
        Some(i) => name.split_at(i + 1),
        None => ("", name),
    };
    let dot = base.find('.')?;
    Some((&name[..dir.len() + dot], &base[dot + 1..]))
}

/// Collects consecutive parts with the same key into samples.
struct Grouper<'f> {
    current: Option<(String, Vec<Tensor>)>,
    tally: &'f mut Tally,
    sink: &'f mut dyn FnMut(String, Vec<Tensor>) -> CliResult,
}

impl Grouper<'_> {
    fn add(&mut self, key: &str, field: &str, what: &str, bytes: &[u8]) -> CliResult {
        let tensors: Vec<Tensor> = if field == "ten" {
            let views = tenstore::decode_buffer(bytes).map_err(|e| format!("{what}: {e}"))?;
            views
                .iter()
                .map(|v| v.to_tensor())
                .collect::<Result<_, _>>()?
        } else if let Some(name) = field
            .strip_suffix(".npy")
            .or((field == "npy").then_some(""))
        {
            check_name(name, Path::new(what))?;
            vec![tenstore::npy::from_bytes(name, bytes).map_err(|e| format!("{what}: {e}"))?]
        } else {
            self.tally.skipped += 1;
            return Ok(());
        };
        if self.current.as_ref().is_some_and(|(k, _)| k != key) {
            self.flush()?;
        }
        let (_, list) = self
            .current
            .get_or_insert_with(|| (key.to_owned(), Vec::new()));
        self.tally.tensors += tensors.len() as u64;
        self.tally.bytes += tensors
            .iter()
            .map(|t| t.view().nbytes() as u64)
            .sum::<u64>();
        list.extend(tensors);
        Ok(())
    }

    fn flush(&mut self) -> CliResult {
        if let Some((key, tensors)) = self.current.take() {
            if key.is_empty() || key.len() > tenstore::store::lmdb::MAX_KEY_LEN {
                return Err(
                    format!("key {key:?} cannot be stored: keys are 1 to 511 bytes").into(),
                );
            }
            self.tally.samples += 1;
            (self.sink)(key, tensors)?;
        }
        Ok(())
    }
}

/// Calls `sink` with every sample of the sources, in order.
fn each_sample(
    sources: &[Source],
    tally: &mut Tally,
    sink: &mut dyn FnMut(String, Vec<Tensor>) -> CliResult,
) -> CliResult {
    let mut g = Grouper {
        current: None,
        tally,
        sink,
    };
    for source in sources {
        match source {
            Source::File(path) => {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let Some((key, field)) = split_name(&name) else {
                    g.tally.skipped += 1;
                    continue;
                };
                if field != "ten" && field != "npy" && !field.ends_with(".npy") {
                    g.tally.skipped += 1;
                    continue;
                }
                let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                g.add(key, field, &path.display().to_string(), &bytes)?;
            }
            Source::Store(path) => {
                let store = stores::open_read(path)?;
                let reader = store.reader()?;
                for sample in reader.samples(tenstore::store::Order::Written)? {
                    let sample = sample.map_err(|e| format!("{}: {e}", path.display()))?;
                    g.flush()?;
                    let tensors: Vec<Tensor> = sample
                        .iter()
                        .map(|v| v.to_tensor())
                        .collect::<Result<_, _>>()?;
                    g.tally.tensors += tensors.len() as u64;
                    g.tally.bytes += tensors
                        .iter()
                        .map(|t| t.view().nbytes() as u64)
                        .sum::<u64>();
                    g.current = Some((String::from_utf8_lossy(sample.key()).into_owned(), tensors));
                }
            }
            Source::Tar(path) => {
                let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let reader: Box<dyn Read> = if path.to_string_lossy().ends_with(".tar") {
                    Box::new(BufReader::new(file))
                } else {
                    Box::new(flate2::read::GzDecoder::new(BufReader::new(file)))
                };
                let mut archive = tar::Archive::new(reader);
                let entries = archive
                    .entries()
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                for entry in entries {
                    let mut entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
                    if !entry.header().entry_type().is_file() {
                        continue;
                    }
                    let member = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                    let what = format!("{}:{member}", path.display());
                    let Some((key, field)) = split_name(&member) else {
                        g.tally.skipped += 1;
                        continue;
                    };
                    let (key, field) = (key.to_owned(), field.to_owned());
                    if field != "ten" && field != "npy" && !field.ends_with(".npy") {
                        g.tally.skipped += 1;
                        continue;
                    }
                    let mut bytes = Vec::new();
                    entry
                        .read_to_end(&mut bytes)
                        .map_err(|e| format!("{what}: {e}"))?;
                    g.add(&key, &field, &what, &bytes)?;
                }
            }
        }
    }
    g.flush()
}

#[cfg(test)]
mod tests {
    use super::split_name;

    #[test]
    fn names_split_like_webdataset_keys() {
        assert_eq!(split_name("s001.image.npy"), Some(("s001", "image.npy")));
        assert_eq!(split_name("train/s001.ten"), Some(("train/s001", "ten")));
        assert_eq!(split_name("a.b/s001.npy"), Some(("a.b/s001", "npy")));
        assert_eq!(split_name("README"), None);
    }
}
