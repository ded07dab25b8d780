//! `tenstore publish`.

use std::path::PathBuf;

use clap::Parser;

use crate::{stores, CliResult};

/// Upload a shard store to object storage (s3://BUCKET/PREFIX, configured
/// by the AWS_* environment variables; or file:///DIR), for every
/// read-only command to read from the URL through a local cache.
///
/// Shards, sidecars, key table, tenstore.json and MANIFEST are uploaded
/// first (large shards in parts), then a manifest listing every object's
/// size and crc32c: until it is written, readers see no store. An LMDB
/// store must be converted first (`tenstore import --create --backend ten
/// NEW OLD`).
#[derive(Parser)]
pub struct Args {
    /// The local shard store.
    store: PathBuf,
    /// Where to publish it: s3://BUCKET/PREFIX or file:///DIR.
    url: String,
    /// Replace a store already published there.
    #[arg(long)]
    replace: bool,
}

pub fn run(args: Args) -> CliResult {
    let report = tenstore::remote::publish(
        &args.store,
        &args.url,
        args.replace,
        &stores::remote_options(),
    )?;
    let bytes: u64 = report.published.objects.iter().map(|o| o.size).sum();
    println!(
        "published {} objects ({bytes} bytes) to {}",
        report.published.objects.len(),
        args.url.trim_end_matches('/')
    );
    if report.removed > 0 {
        println!("removed {} objects of the replaced store", report.removed);
    }
    Ok(())
}
