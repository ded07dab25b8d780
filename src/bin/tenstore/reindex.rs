//! `tenstore reindex STORE`

use std::path::PathBuf;

use tenstore::store::ShardStore;

use crate::CliResult;

/// Rebuild the sidecars (and a lost MANIFEST) of a shard store from its
/// shards.
///
/// Sidecar records that are still valid are kept with the checksums
/// committed with them; whole records no valid sidecar record covers (a
/// damaged, emptied or truncated sidecar) are indexed again from the
/// shards' tenbin structure. Prints one line per shard; takes the writer
/// lock. Use it when opening for writing refuses and names it, then run
/// `tenstore verify`.
#[derive(clap::Args)]
pub struct Args {
    /// The shard store directory.
    store: PathBuf,
}

pub fn run(args: Args) -> CliResult {
    if tenstore::store::Backend::detect(&args.store) == Some(tenstore::store::Backend::Lmdb) {
        return Err(format!(
            "{}: an LMDB store has no sidecars to rebuild (reindex is for ten stores)",
            args.store.display()
        )
        .into());
    }
    let report = ShardStore::reindex(&args.store)?;
    let mut records = 0;
    for s in &report {
        records += s.records;
        let mut line = format!("{:06}.ten: {} records", s.shard, s.records);
        if s.rebuilt > 0 {
            line += &format!(
                ", {} of them indexed from the shard alone (no committed checksum to check them against)",
                s.rebuilt
            );
        }
        if s.bytes_unindexed > 0 {
            line += &format!(
                ", {} bytes not indexed ({} after the last record: a torn tail the next writer cuts)",
                s.bytes_unindexed, s.bytes_after
            );
        }
        println!("{line}");
    }
    println!(
        "{}: {} shards reindexed, {} records",
        args.store.display(),
        report.len(),
        records
    );
    Ok(())
}
