//! `tenstore import STORE PATH...`: bulk loading.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::hash::BuildHasher;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tenstore::store::{Backend, Store};
use tenstore::Tensor;

use crate::inputs::check_name;
use crate::keys;
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
/// members (.jpg, .cls, ...) are skipped and counted, and so are tar
/// links and special files (never followed). Input files must be regular
/// files (a symlink to one is read).
///
/// Every input is read and checked before anything is written, so bad
/// input changes nothing in the store: undecodable data, a key that comes
/// back later in the inputs (unless --overwrite), a sample with no
/// tensors (unless --allow-empty), a tensor name the store's backend
/// reserves. Samples are then written in batches of one transaction each;
/// a sample under a key the store already holds replaces it. If writing
/// fails part way, the samples this import added are removed again (a
/// store made by --create is removed); samples it replaced keep the new
/// value.
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
    backend: Option<Backend>,
    /// Samples per write transaction.
    #[arg(long, default_value_t = 512)]
    batch: usize,
    /// When a key comes back later in the inputs, keep its last sample
    /// (without this, such inputs are refused).
    #[arg(long)]
    overwrite: bool,
    /// Store samples with no tensors (an empty .ten file) instead of
    /// refusing them.
    #[arg(long)]
    allow_empty: bool,
}

/// What a pass over the inputs found.
#[derive(Default)]
struct Tally {
    samples: u64,
    tensors: u64,
    bytes: u64,
    /// Members and files that are neither .npy nor .ten.
    skipped: u64,
    /// Tar links and special files.
    special: u64,
}

/// What the inputs hold, beyond what every sample passes.
struct Rules {
    reserved: &'static [&'static str],
    allow_empty: bool,
}

/// Which keys the inputs hold, in about 16 bytes per sample: a set of
/// keyed 64-bit hashes, not the keys. A hash seen twice makes a *suspect*
/// (a repeated key, or two keys whose hashes collide); `confirm` then
/// reads the inputs again and compares the suspects' keys themselves.
/// So an import of many millions of samples does not hold its keys in
/// memory, and no collision is ever taken for a repeat.
struct Census<S: BuildHasher = RandomState> {
    hasher: S,
    seen: HashSet<u64>,
    suspects: HashSet<u64>,
}

impl Census {
    fn new() -> Self {
        Census::with_hasher(RandomState::new())
    }
}

impl<S: BuildHasher> Census<S> {
    fn with_hasher(hasher: S) -> Self {
        Census {
            hasher,
            seen: HashSet::new(),
            suspects: HashSet::new(),
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Records one sample's key; returns its hash.
    fn add(&mut self, key: &[u8]) -> u64 {
        let h = self.hash(key);
        if !self.seen.insert(h) {
            self.suspects.insert(h);
        }
        h
    }

    /// Among the suspects, the keys that really come back: with
    /// `overwrite`, every occurrence's (tensors, bytes) but the last one's
    /// (what the store will not keep); without it, the first repeat is an
    /// error. `each` replays the samples in input order.
    fn confirm(
        &self,
        overwrite: bool,
        each: impl FnOnce(&mut Sink) -> CliResult,
    ) -> Result<Vec<(u64, u64)>, Box<dyn std::error::Error>> {
        let mut replaced = Vec::new();
        if self.suspects.is_empty() {
            return Ok(replaced);
        }
        let mut last: HashMap<Vec<u8>, (u64, u64)> = HashMap::new();
        each(&mut |key, tensors, what| {
            if !self.suspects.contains(&self.hash(&key)) {
                return Ok(());
            }
            if last.contains_key(&key) && !overwrite {
                return Err(format!(
                    "{what}: key {:?} comes back after other samples (give --overwrite to keep its last sample); nothing was written",
                    keys::escape(&key)
                )
                .into());
            }
            if let Some(earlier) = last.insert(key, sizes(&tensors)) {
                replaced.push(earlier);
            }
            Ok(())
        })?;
        Ok(replaced)
    }
}

/// A sample's tensor count and data bytes.
fn sizes(tensors: &[Tensor]) -> (u64, u64) {
    (
        tensors.len() as u64,
        tensors.iter().map(|t| t.view().nbytes() as u64).sum(),
    )
}

/// The keys an import has sent to the store, in order, kept in an
/// unnamed temporary file rather than in memory: they are read back only
/// if the import fails and must be undone.
struct Sent {
    file: BufWriter<File>,
    count: u64,
}

impl Sent {
    fn new() -> Result<Self, String> {
        let file = tempfile::tempfile()
            .map_err(|e| format!("cannot make a temporary file for the import's key list: {e}"))?;
        Ok(Sent {
            file: BufWriter::new(file),
            count: 0,
        })
    }

    fn push(&mut self, key: &[u8]) -> std::io::Result<()> {
        // Keys are at most 511 bytes (checked before they get here).
        self.file.write_all(&(key.len() as u16).to_le_bytes())?;
        self.file.write_all(key)?;
        self.count += 1;
        Ok(())
    }

    /// Calls `each` with chunks of up to `chunk` keys, in the order sent.
    fn replay(
        &mut self,
        chunk: usize,
        mut each: impl FnMut(&[Vec<u8>]) -> Result<(), Box<dyn std::error::Error>>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        self.file.flush()?;
        let file = self.file.get_mut();
        file.seek(SeekFrom::Start(0))?;
        let mut read = BufReader::new(&*file);
        let mut keys = Vec::with_capacity(chunk);
        for _ in 0..self.count {
            let mut len = [0u8; 2];
            read.read_exact(&mut len)?;
            let mut key = vec![0u8; usize::from(u16::from_le_bytes(len))];
            read.read_exact(&mut key)?;
            keys.push(key);
            if keys.len() == chunk {
                each(&keys)?;
                keys.clear();
            }
        }
        if !keys.is_empty() {
            each(&keys)?;
        }
        Ok(())
    }
}

/// A sink for samples: key, tensors, and where the sample came from.
type Sink<'a> = dyn FnMut(Vec<u8>, Vec<Tensor>, &str) -> CliResult + 'a;

pub fn run(args: Args) -> CliResult {
    let sources = collect(&args.paths)?;
    for source in &sources {
        if let Source::Store(path) = source {
            if same_dir(path, &args.store) {
                return Err(
                    format!("{}: cannot import a store into itself", path.display()).into(),
                );
            }
        }
    }
    let existing = Backend::detect(&args.store);
    let target = existing.or(args.create.then(|| args.backend.unwrap_or(Backend::Lmdb)));
    let rules = Rules {
        reserved: target.map_or(&[][..], Backend::reserved_names),
        allow_empty: args.allow_empty,
    };

    // Pass 1: read and check everything; nothing is written. Keys the
    // store already holds are noted (by hash): their samples are replaced,
    // not added, and a failed import must not remove them.
    let mut check = Tally::default();
    let mut census = Census::new();
    let mut held = HashSet::new();
    let (mut tensors, mut bytes) = (0u64, 0u64);
    {
        let target_store = match existing {
            Some(_) => Some(stores::open_read(&args.store)?),
            None => None,
        };
        let target_reader = target_store.as_ref().map(Store::reader).transpose()?;
        each_sample(&sources, &rules, &mut check, &mut |key, sample, _| {
            let (t, b) = sizes(&sample);
            tensors += t;
            bytes += b;
            let h = census.add(&key);
            if let Some(reader) = &target_reader {
                if !matches!(reader.get(&key), Ok(None)) {
                    held.insert(h);
                }
            }
            Ok(())
        })?;
    }
    // Keys whose hash came back: repeats (refused without --overwrite) or
    // collisions, told apart by a second read of the inputs.
    let replaced = census.confirm(args.overwrite, |sink| {
        each_sample(&sources, &rules, &mut Tally::default(), sink)
    })?;
    for (t, b) in &replaced {
        tensors -= t;
        bytes -= b;
    }
    let distinct = check.samples - replaced.len() as u64;

    // What the directory held before, to remove only what --create adds.
    let before: Option<HashSet<OsString>> = match existing {
        Some(_) => None,
        None => Some(match std::fs::read_dir(&args.store) {
            Ok(entries) => entries
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: {e}", args.store.display()))?,
            Err(_) => HashSet::new(),
        }),
    };
    let dir_existed = args.store.exists();

    let mut sent = Sent::new()?;
    let store = match stores::open_bulk(&args.store, args.create, args.backend) {
        Ok(store) => store,
        Err(e) => {
            if let Some(before) = &before {
                remove_created(&args.store, dir_existed, before);
            }
            return Err(e.into());
        }
    };
    let mut progress = Progress::new();
    let mut batch: Vec<(Vec<u8>, Vec<Tensor>)> = Vec::new();
    let mut pass = Tally::default();
    let (mut queued, mut sent_bytes) = (0u64, 0u64);
    let batch_size = args.batch.max(1);
    let mut send = |batch: &mut Vec<(Vec<u8>, Vec<Tensor>)>| -> CliResult {
        for (key, _) in batch.iter() {
            sent.push(key)
                .map_err(|e| format!("cannot write the import's key list: {e}"))?;
        }
        store.put_batch(batch)?;
        batch.clear();
        Ok(())
    };
    let result = each_sample(&sources, &rules, &mut pass, &mut |key, tensors, _| {
        queued += 1;
        sent_bytes += sizes(&tensors).1;
        batch.push((key, tensors));
        if batch.len() >= batch_size {
            send(&mut batch)?;
            progress.update(queued, sent_bytes);
        }
        Ok(())
    })
    .and_then(|()| {
        send(&mut batch)?;
        Ok(store.flush()?)
    });
    progress.finish();
    if let Err(e) = result {
        drop(batch);
        let undone = match &before {
            Some(before) => {
                drop(store);
                remove_created(&args.store, dir_existed, before)
            }
            None => undo(&store, &mut sent, &held, &census),
        };
        return Err(format!(
            "import stopped while writing ({} of {} samples sent to the store): {e}; {undone}",
            sent.count, check.samples
        )
        .into());
    }

    let mut summary = format!(
        "imported {distinct} samples ({tensors} tensors, {:.1} MB of data) from {} inputs into {}",
        bytes as f64 / 1e6,
        sources.len(),
        args.store.display(),
    );
    if check.skipped > 0 {
        summary += &format!(
            "; skipped {} members that are neither .npy nor .ten",
            check.skipped
        );
    }
    if check.special > 0 {
        summary += &format!(
            "; skipped {} links and special files (not followed)",
            check.special
        );
    }
    if !replaced.is_empty() {
        summary += &format!(
            "; {} samples were replaced by a later one with the same key (--overwrite)",
            replaced.len()
        );
    }
    println!("{summary}");
    Ok(())
}

/// Removes the samples a failed import added (keys it sent that the store
/// did not hold before, by `held`'s hashes, and holds now); says what it
/// did. A key whose hash collides with a held key's is kept: undo never
/// removes a sample the store held before.
fn undo(store: &Store, sent: &mut Sent, held: &HashSet<u64>, census: &Census) -> String {
    let mut replaced = HashSet::new();
    let mut removed = 0usize;
    let outcome = sent.replay(4096, |keys| {
        let added: Vec<&[u8]> = {
            let reader = store.reader()?;
            let mut chunk = HashSet::new();
            let mut added = Vec::new();
            for key in keys {
                let h = census.hash(key);
                if held.contains(&h) {
                    replaced.insert(h);
                } else if chunk.insert(key) && !matches!(reader.get(key), Ok(None)) {
                    added.push(key.as_slice());
                }
            }
            added
        };
        if !added.is_empty() {
            store.delete_exact(&added)?;
            removed += added.len();
        }
        Ok(())
    });
    let outcome = outcome.and_then(|()| Ok(store.flush()?));
    let kept = if replaced.is_empty() {
        String::new()
    } else {
        format!(
            ", except that the {} samples it replaced (keys the store held before) keep their imported value",
            replaced.len()
        )
    };
    match outcome {
        Ok(()) => format!(
            "removed the {removed} samples it had added, so the store holds the keys it held before{kept}"
        ),
        Err(e) => format!(
            "removing the samples it had added failed too ({e}): up to {} samples of this import remain in the store",
            sent.count - removed as u64
        ),
    }
}

/// Removes what `--create` made in `dir`: all of it if it did not exist,
/// else the entries not in `before`. Says what it did.
fn remove_created(dir: &Path, existed: bool, before: &HashSet<OsString>) -> String {
    let result = if !existed {
        std::fs::remove_dir_all(dir).or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(e),
        })
    } else {
        (|| {
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                if before.contains(&entry.file_name()) {
                    continue;
                }
                if entry.file_type()?.is_dir() {
                    std::fs::remove_dir_all(entry.path())?;
                } else {
                    std::fs::remove_file(entry.path())?;
                }
            }
            Ok(())
        })()
    };
    match result {
        Ok(()) => format!("removed the store it created in {}", dir.display()),
        Err(e) => format!(
            "removing the store it created in {} failed too: {e}",
            dir.display()
        ),
    }
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
        if meta.is_dir() && Backend::detect(path).is_some() {
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

/// Splits a file name into KEY and FIELD at the first dot of its last
/// component.
fn split_name(name: &[u8]) -> Option<(&[u8], &[u8])> {
    let base = name.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    let dot = base + name[base..].iter().position(|&b| b == b'.')?;
    Some((&name[..dot], &name[dot + 1..]))
}

/// What a FIELD holds.
enum Field {
    /// All tensors of a .ten stream.
    Ten,
    /// One .npy tensor of this name.
    Npy(String),
}

fn field_kind(field: &[u8]) -> Option<Field> {
    if field == b"ten" {
        Some(Field::Ten)
    } else if field == b"npy" {
        Some(Field::Npy(String::new()))
    } else {
        field
            .strip_suffix(b".npy")
            .map(|n| Field::Npy(String::from_utf8_lossy(n).into_owned()))
    }
}

/// Reads one part from `stream`, which ends where the part does: a .ten
/// stream tensor by tensor, an .npy file whole.
fn read_part(field: &Field, what: &str, stream: &mut dyn Read) -> Result<Vec<Tensor>, String> {
    match field {
        Field::Ten => {
            let mut buffered = BufReader::with_capacity(1 << 16, stream);
            tenstore::read_all(&mut buffered).map_err(|e| format!("{what}: {e}"))
        }
        Field::Npy(name) => {
            check_name(name, Path::new(what))?;
            let mut bytes = Vec::new();
            stream
                .read_to_end(&mut bytes)
                .map_err(|e| format!("{what}: {e}"))?;
            Ok(vec![
                tenstore::npy::from_bytes(name, &bytes).map_err(|e| format!("{what}: {e}"))?
            ])
        }
    }
}

/// Opens an input file, which must be a regular file (a symlink to one is
/// followed; devices, FIFOs and sockets are refused), and returns it with
/// its size at opening.
fn open_regular(path: &Path) -> Result<(File, u64), String> {
    let shown = path.display();
    let not_regular =
        || format!("{shown}: not a regular file (devices, FIFOs and sockets are not read)");
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    // O_NONBLOCK: should the path become a FIFO after the check, opening
    // it does not wait for a writer; the check below then refuses it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("{shown}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
    let kind = meta.file_type();
    if !meta.is_file() || kind.is_fifo() || kind.is_char_device() || kind.is_block_device() {
        return Err(not_regular());
    }
    Ok((file, meta.len()))
}

/// Collects consecutive parts with the same key into samples.
struct Grouper<'f, 's> {
    current: Option<(Vec<u8>, Vec<Tensor>, String)>,
    rules: &'f Rules,
    tally: &'f mut Tally,
    sink: &'f mut Sink<'s>,
}

impl Grouper<'_, '_> {
    fn add(&mut self, key: &[u8], tensors: Vec<Tensor>, what: &str) -> CliResult {
        if self.current.as_ref().is_some_and(|(k, _, _)| k != key) {
            self.flush()?;
        }
        for t in &tensors {
            if self.rules.reserved.contains(&t.name()) {
                return Err(format!(
                    "{what}: tensor name {:?} is reserved by the store's record layout (reserved: {}); nothing was written",
                    t.name(),
                    self.rules.reserved.join(", ")
                )
                .into());
            }
        }
        let (_, list, _) = self
            .current
            .get_or_insert_with(|| (key.to_owned(), Vec::new(), what.to_owned()));
        self.tally.tensors += tensors.len() as u64;
        self.tally.bytes += sizes(&tensors).1;
        list.extend(tensors);
        Ok(())
    }

    fn flush(&mut self) -> CliResult {
        if let Some((key, tensors, what)) = self.current.take() {
            if tenstore::store::key::check_key(&key).is_err() {
                return Err(format!(
                    "key {:?} cannot be stored: keys are 1 to 511 bytes",
                    keys::escape(&key)
                )
                .into());
            }
            if tensors.is_empty() && !self.rules.allow_empty {
                return Err(format!(
                    "{what}: sample {:?} has no tensors (--allow-empty stores it anyway); nothing was written",
                    keys::escape(&key)
                )
                .into());
            }
            self.tally.samples += 1;
            (self.sink)(key, tensors, &what)?;
        }
        Ok(())
    }
}

/// Calls `sink` with every sample of the sources, in order.
fn each_sample(sources: &[Source], rules: &Rules, tally: &mut Tally, sink: &mut Sink) -> CliResult {
    let mut g = Grouper {
        current: None,
        rules,
        tally,
        sink,
    };
    for source in sources {
        match source {
            Source::File(path) => {
                let name = path.file_name().map(OsStrExt::as_bytes).unwrap_or_default();
                let Some(field) = split_name(name).and_then(|(_, f)| field_kind(f)) else {
                    g.tally.skipped += 1;
                    continue;
                };
                let key = split_name(name).map(|(k, _)| k).unwrap_or_default();
                let what = path.display().to_string();
                let (file, len) = open_regular(path)?;
                let tensors = read_part(&field, &what, &mut file.take(len))?;
                g.add(key, tensors, &what)?;
            }
            Source::Store(path) => {
                let store = stores::open_read(path)?;
                let reader = store.reader()?;
                let what = path.display().to_string();
                for sample in reader.samples(tenstore::store::Order::Written)? {
                    let sample = sample.map_err(|e| format!("{}: {e}", path.display()))?;
                    g.flush()?;
                    let tensors: Vec<Tensor> = sample
                        .iter()
                        .map(|v| v.to_tensor())
                        .collect::<Result<_, _>>()?;
                    g.add(sample.key(), tensors, &what)?;
                    g.flush()?;
                }
            }
            Source::Tar(path) => {
                let (file, _) = open_regular(path)?;
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
                    let kind = entry.header().entry_type();
                    if kind.is_dir() {
                        continue;
                    }
                    if !kind.is_file() {
                        // Links, devices, FIFOs: never followed.
                        g.tally.special += 1;
                        continue;
                    }
                    let member = entry.path_bytes().into_owned();
                    let what = format!("{}:{}", path.display(), String::from_utf8_lossy(&member));
                    let Some((key, field)) =
                        split_name(&member).and_then(|(k, f)| Some((k, field_kind(f)?)))
                    else {
                        g.tally.skipped += 1;
                        continue;
                    };
                    // The entry reads at most the member's declared size.
                    let tensors = read_part(&field, &what, &mut entry)?;
                    g.add(key, tensors, &what)?;
                }
            }
        }
    }
    g.flush()
}

#[cfg(test)]
mod tests {
    use super::{split_name, Census, Sent, Sink};
    use crate::CliResult;
    use std::hash::{BuildHasherDefault, Hasher};
    use tenstore::Tensor;

    /// A hasher under which every key collides.
    #[derive(Default)]
    struct Constant;

    impl Hasher for Constant {
        fn finish(&self) -> u64 {
            7
        }
        fn write(&mut self, _: &[u8]) {}
    }

    fn sample(n: usize) -> Vec<Tensor> {
        vec![Tensor::new("x", ndarray::ArrayD::<u8>::zeros(vec![n])).unwrap()]
    }

    /// Replays `keys` (with `n` bytes of data each) into a sink.
    fn replay<'k>(keys: &'k [(&'k str, usize)]) -> impl FnOnce(&mut Sink) -> CliResult + 'k {
        move |sink| {
            for (key, n) in keys {
                sink(key.as_bytes().to_vec(), sample(*n), key)?;
            }
            Ok(())
        }
    }

    #[test]
    fn colliding_hashes_are_not_taken_for_repeats() {
        let mut census = Census::with_hasher(BuildHasherDefault::<Constant>::default());
        let keys = [("a", 1), ("b", 2), ("c", 3)];
        for (k, _) in &keys {
            census.add(k.as_bytes());
        }
        assert_eq!(census.suspects.len(), 1, "every key collides");
        let replaced = census.confirm(false, replay(&keys)).unwrap();
        assert!(replaced.is_empty(), "{replaced:?}");
    }

    #[test]
    fn a_real_repeat_is_refused_or_counted_with_the_sizes_it_replaces() {
        let mut census = Census::with_hasher(BuildHasherDefault::<Constant>::default());
        let keys = [("a", 1), ("b", 2), ("a", 5), ("a", 9)];
        for (k, _) in &keys {
            census.add(k.as_bytes());
        }
        let err = census.confirm(false, replay(&keys)).unwrap_err();
        assert!(err.to_string().contains("key \"a\" comes back"), "{err}");
        // With --overwrite the store keeps the last "a": the first two
        // occurrences' sizes are what the totals must not count.
        let replaced = census.confirm(true, replay(&keys)).unwrap();
        assert_eq!(replaced, vec![(1, 1), (1, 5)]);
    }

    #[test]
    fn distinct_keys_leave_no_suspects_under_the_keyed_hash() {
        let mut census = Census::new();
        for i in 0..10_000u32 {
            census.add(format!("k{i:06}").as_bytes());
        }
        assert_eq!(census.seen.len(), 10_000);
        assert!(census.suspects.is_empty());
        census.add(b"k000042");
        assert_eq!(census.suspects.len(), 1, "a repeat is a suspect");
    }

    #[test]
    fn sent_keys_come_back_in_order_in_chunks() {
        let mut sent = Sent::new().unwrap();
        let keys: Vec<Vec<u8>> = (0..10u8)
            .map(|i| vec![i; 1 + 50 * usize::from(i)])
            .collect();
        for k in &keys {
            sent.push(k).unwrap();
        }
        let mut back = Vec::new();
        let mut chunks = Vec::new();
        sent.replay(4, |chunk| {
            chunks.push(chunk.len());
            back.extend_from_slice(chunk);
            Ok(())
        })
        .unwrap();
        assert_eq!(back, keys);
        assert_eq!(chunks, vec![4, 4, 2]);
    }

    #[test]
    fn names_split_like_webdataset_keys() {
        let split = |n: &'static str| split_name(n.as_bytes());
        assert_eq!(
            split("s001.image.npy"),
            Some((&b"s001"[..], &b"image.npy"[..]))
        );
        assert_eq!(
            split("train/s001.ten"),
            Some((&b"train/s001"[..], &b"ten"[..]))
        );
        assert_eq!(split("a.b/s001.npy"), Some((&b"a.b/s001"[..], &b"npy"[..])));
        assert_eq!(split("README"), None);
        assert_eq!(split_name(b"\xff.npy"), Some((&b"\xff"[..], &b"npy"[..])));
    }
}
