//! `publish`: uploads a local shard store to object storage, the
//! published manifest last.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use object_store::{ObjectStore, WriteMultipart};

use super::error::RemoteError;
use super::fetch::Fetcher;
use super::published::{Object, Published, FORMAT, PUBLISHED};
use super::RemoteOptions;
use crate::store::shard::layout::{idx_name, shard_name, MANIFEST};
use crate::store::shard::{ShardOptions, ShardStore};
use crate::store::META_FILE;
use crate::store::{Backend, StoreError};

/// Objects larger than this are uploaded in parts of this size, unless
/// [`RemoteOptions::part_size`] says otherwise.
pub const PART_SIZE: usize = 16 << 20;

/// The smallest part S3 accepts (all but an upload's last part).
pub const MIN_S3_PART_SIZE: usize = 5 << 20;

/// What [`publish`] uploaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishReport {
    /// The published manifest: every object with its size and checksum.
    pub published: Published,
    /// Objects of a replaced publication that the new one does not use,
    /// deleted after it was published.
    pub removed: usize,
}

/// Uploads the shard store in `dir` to `url`: shards (multipart when
/// large), sidecars, key table, `tenstore.json`, `MANIFEST`, and last the
/// published manifest listing every object's size and crc32c, so readers
/// never see a half-published store. A store already published there is
/// refused unless `replace`; replacing first deletes its published
/// manifest (readers that open meanwhile are told nothing is published),
/// then removes the old objects the new store does not overwrite.
///
/// Each file is uploaded up to its length when the publish began
/// (sidecars measured before shards), so a writer appending meanwhile
/// does not make the published store inconsistent.
pub fn publish(
    dir: &Path,
    url: &str,
    replace: bool,
    options: &RemoteOptions,
) -> Result<PublishReport, RemoteError> {
    // Refused before any upload: S3 refuses small parts only when the
    // upload is completed.
    let s3 = url
        .get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case("s3://"));
    if s3 && options.part_size < MIN_S3_PART_SIZE {
        return Err(RemoteError::PartSize {
            url: url.to_owned(),
            part_size: options.part_size,
        });
    }
    match Backend::detect(dir) {
        Some(Backend::Shard) => {}
        Some(Backend::Lmdb) => {
            return Err(RemoteError::NotShardStore {
                path: dir.to_owned(),
            })
        }
        None => {
            return Err(StoreError::NotAStore {
                path: dir.to_owned(),
            }
            .into())
        }
    }
    let store = ShardStore::open(
        dir,
        &ShardOptions {
            read_only: true,
            ..Default::default()
        },
    )?;
    let reader = store.reader()?;
    if reader.load_report().hides_records() {
        return Err(RemoteError::Damaged {
            path: dir.to_owned(),
            problems: reader.load_report().problems().join("; "),
        });
    }
    let manifest = reader.snap.manifest().clone();
    let loc = super::url::parse(url, options)?;
    let fetch = Fetcher::new(loc)?;
    let old = match fetch.get_optional(PUBLISHED)? {
        Some(_) if !replace => {
            return Err(RemoteError::AlreadyPublished {
                url: fetch.loc.url.clone(),
            })
        }
        Some(raw) => serde_json::from_slice::<Published>(&raw).ok(),
        None => None,
    };
    fetch.delete(PUBLISHED)?;

    // Lengths first: sidecars before shards, so every record a sidecar
    // prefix commits lies within the shard prefix.
    let mut plan: Vec<(String, u64)> = Vec::new();
    let len_of = |name: &str| -> Result<u64, RemoteError> {
        let p = dir.join(name);
        std::fs::metadata(&p)
            .map(|m| m.len())
            .map_err(|e| RemoteError::io(format!("reading {}", p.display()), e))
    };
    let mut sidecars = Vec::new();
    for &no in &manifest.shards {
        sidecars.push((idx_name(no), len_of(&idx_name(no))?));
    }
    for &no in &manifest.shards {
        plan.push((shard_name(no), len_of(&shard_name(no))?));
    }
    plan.extend(sidecars);
    // Both levels of the key table (a second level over another base is
    // ignored by readers, and fetched as any other file).
    for table in [
        crate::store::shard::table::TABLE,
        crate::store::shard::table::TOP,
    ] {
        if dir.join(table).is_file() {
            plan.push((table.to_owned(), len_of(table)?));
        }
    }
    plan.push((META_FILE.to_owned(), len_of(META_FILE)?));
    plan.push((MANIFEST.to_owned(), len_of(MANIFEST)?));

    let mut objects = Vec::with_capacity(plan.len());
    let part = options.part_size.max(1);
    for (name, len) in plan {
        let crc = upload(&fetch, &dir.join(&name), &name, len, part)?;
        objects.push(Object {
            name,
            size: len,
            crc32c: crc,
        });
    }
    let published = Published {
        format: FORMAT.to_owned(),
        objects,
    };
    let bytes = serde_json::to_vec_pretty(&published).map_err(|e| {
        RemoteError::io("encoding the published manifest", std::io::Error::other(e))
    })?;
    fetch.put(PUBLISHED, bytes)?;
    let mut removed = 0;
    if let Some(old) = old {
        for o in old.objects {
            if o.name != PUBLISHED && published.get(&o.name).is_none() {
                fetch.delete(&o.name)?;
                removed += 1;
            }
        }
    }
    Ok(PublishReport { published, removed })
}

/// Uploads the first `len` bytes of `path` as object `name` (in parts of
/// `part` bytes when longer); returns their crc32c.
fn upload(
    fetch: &Fetcher,
    path: &Path,
    name: &str,
    len: u64,
    part: usize,
) -> Result<u32, RemoteError> {
    let ctx = |e| RemoteError::io(format!("reading {}", path.display()), e);
    let mut file = File::open(path).map_err(ctx)?.take(len);
    if len <= part as u64 {
        let mut bytes = Vec::with_capacity(len as usize);
        file.read_to_end(&mut bytes).map_err(ctx)?;
        if bytes.len() as u64 != len {
            return Err(short(path, len));
        }
        let crc = crc32c::crc32c(&bytes);
        fetch.put(name, bytes)?;
        return Ok(crc);
    }
    let object = fetch.loc.object(name);
    let what = fetch.loc.describe(name);
    let store = fetch.loc.store.clone();
    fetch.block_on(async {
        let upload = store
            .put_multipart(&object)
            .await
            .map_err(|e| RemoteError::request("PUT (multipart)", what.clone(), e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
        let mut crc = 0u32;
        let mut done = 0u64;
        // Read in pieces of at most 8 MiB; the writer gathers them into
        // parts.
        let mut buf = vec![0u8; part.min(8 << 20)];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(ctx(e));
                }
            };
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            done += n as u64;
            writer
                .wait_for_capacity(4)
                .await
                .map_err(|e| RemoteError::request("PUT (part)", what.clone(), e))?;
            writer.write(&buf[..n]);
        }
        if done != len {
            let _ = writer.abort().await;
            return Err(short(path, len));
        }
        writer
            .finish()
            .await
            .map_err(|e| RemoteError::request("PUT (complete multipart)", what.clone(), e))?;
        Ok(crc)
    })
}

fn short(path: &Path, len: u64) -> RemoteError {
    RemoteError::io(
        format!("reading {}", path.display()),
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the file is shorter than the {len} bytes it had when the publish began"),
        ),
    )
}
