//! Files: the reference's `save` and `load`.

use std::fs::{self, File, OpenOptions};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::Mmap;

use crate::codec::{encode_to, TensorBuf};
use crate::error::{Error, Result};
use crate::tensor::AsTensorRef;

/// Options for [`save_with`] and [`load_with`].
#[derive(Clone, Debug)]
pub struct FileOptions {
    /// Refuse file names that do not end in `.ten`, as the reference does
    /// unless given `nocheck=True`. Default: `true`.
    pub check_extension: bool,
    /// On save, `fsync` the file before it replaces the old one, so that
    /// it survives a power loss once `save` returns. Default: `false`.
    pub sync: bool,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            check_extension: true,
            sync: false,
        }
    }
}

fn check_extension(path: &Path, options: &FileOptions) -> Result<()> {
    if options.check_extension && path.extension().is_none_or(|e| e != "ten") {
        return Err(Error::Extension {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Saves `tensors` to a `.ten` file: the reference's `save`.
///
/// The file is written beside its final name and renamed over it when
/// complete, so a reader never sees a half-written file and a process that
/// has the old file mapped keeps its (unchanged) bytes.
///
/// ```
/// use ndarray::array;
/// use tenstore::{load, save, TensorRef};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("weights.ten");
/// let w = array![[1.0f32, 2.0], [3.0, 4.0]];
/// save(&path, &[TensorRef::from_array("w", &w)?])?;
/// // SAFETY: the file is ours and nothing modifies it while it is mapped.
/// let file = unsafe { load(&path)? };
/// assert_eq!(file.tensors().get(0).unwrap().array::<f32>()?, w.view().into_dyn());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn save<P: AsRef<Path>, T: AsTensorRef>(path: P, tensors: &[T]) -> Result<()> {
    save_with(path, tensors, &FileOptions::default())
}

/// [`save`] with options.
pub fn save_with<P: AsRef<Path>, T: AsTensorRef>(
    path: P,
    tensors: &[T],
    options: &FileOptions,
) -> Result<()> {
    let path = path.as_ref();
    check_extension(path, options)?;
    let (tmp, file) = create_beside(path)?;
    let written = write_file(file, tensors, options, &tmp).and_then(|()| {
        fs::rename(&tmp, path).map_err(|e| {
            Error::io(
                format!("renaming {} to {}", tmp.display(), path.display()),
                e,
            )
        })
    });
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

fn write_file<T: AsTensorRef>(
    file: File,
    tensors: &[T],
    options: &FileOptions,
    tmp: &Path,
) -> Result<()> {
    let ctx = |e| Error::io(format!("writing {}", tmp.display()), e);
    let mut w = BufWriter::with_capacity(1 << 16, file);
    encode_to(tensors, &mut w).map_err(ctx)?;
    let file = w.into_inner().map_err(|e| ctx(e.into_error()))?;
    if options.sync {
        file.sync_all().map_err(ctx)?;
    }
    Ok(())
}

/// Creates a new, unique file in the directory of `path`.
fn create_beside(path: &Path) -> Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{stem}.{}.{n}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(format!("creating {}", tmp.display()), e)),
        }
    }
}

/// The bytes of a loaded file: a read-only memory map (nothing for an
/// empty file, which cannot be mapped).
pub struct MappedFile(Option<Mmap>);

impl AsRef<[u8]> for MappedFile {
    fn as_ref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

/// Maps a `.ten` file and checks it: the reference's `load`, in O(number of
/// tensors) rather than O(bytes). The result owns the map and lends
/// zero-copy views (every payload of a mapped file is 16-byte aligned, so
/// every dtype views without a copy).
///
/// # Safety
///
/// The file must not be truncated or modified, by this process or another,
/// while the result lives: the views read the file's pages directly, so a
/// modification changes their values under them and a truncation makes
/// reading them fault (SIGBUS). Files written by [`save`] are replaced by
/// a rename, never modified in place, and are safe to load while others
/// save. To read without this contract, use [`read`](crate::read) on a
/// `File`.
pub unsafe fn load<P: AsRef<Path>>(path: P) -> Result<TensorBuf<MappedFile>> {
    // SAFETY: the caller upholds this function's contract, which is the
    // same as the one `load_with` requires.
    unsafe { load_with(path, &FileOptions::default()) }
}

/// [`load`] with options.
///
/// # Safety
///
/// As for [`load`].
pub unsafe fn load_with<P: AsRef<Path>>(
    path: P,
    options: &FileOptions,
) -> Result<TensorBuf<MappedFile>> {
    let path = path.as_ref();
    check_extension(path, options)?;
    let ctx = |e| Error::io(format!("loading {}", path.display()), e);
    let file = File::open(path).map_err(ctx)?;
    let len = file.metadata().map_err(ctx)?.len();
    let map = if len == 0 {
        None
    } else {
        // SAFETY: the caller promises that nobody truncates or writes the
        // file while the map lives (this function's contract); the map is
        // read-only, so this process cannot write it through the map.
        Some(unsafe { Mmap::map(&file) }.map_err(ctx)?)
    };
    TensorBuf::new(MappedFile(map))
}
