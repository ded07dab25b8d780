//! The `tenstore` command line: a thin layer over the library, one module
//! per subcommand.
//!
//! Exit status: 0 on success, 1 when the operation failed (a missing key,
//! bad input, a damaged file), 2 for usage errors. Errors are one line on
//! stderr.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;
mod export;
mod filename;
mod get;
mod import;
mod info;
mod inputs;
mod keys;
mod ls;
mod progress;
#[cfg(feature = "s3")]
mod publish;
mod pull;
mod push;
mod put;
mod reindex;
mod report;
mod rm;
mod serve;
mod stores;
mod verify;

/// Store and inspect tensors in webdataset's tenbin format.
///
/// A STORE is a directory holding an LMDB environment or append-only .ten
/// shards; `--create [--backend lmdb|ten]` on `put` or `import` makes a
/// new one.
#[derive(Parser)]
#[command(name = "tenstore", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Let commands that write (put, rm, import) write to an LMDB
    /// environment tenstore did not create (one with no tenstore.json, e.g.
    /// written by Python's lmdb): it is adopted by writing tenstore.json.
    /// Without it such an environment can only be read.
    #[arg(long, global = true)]
    adopt: bool,
    /// Cache directory of remote stores (s3://, file:// URLs given as
    /// STORE): default $XDG_CACHE_HOME/tenstore or ~/.cache/tenstore.
    #[cfg(feature = "s3")]
    #[arg(long, global = true, value_name = "DIR")]
    cache: Option<std::path::PathBuf>,
    /// Bytes the cache may hold on disk (suffixes K, M, G, T: powers of
    /// 1024); default 10G. Least recently used shards and records are
    /// evicted to stay under it.
    #[cfg(feature = "s3")]
    #[arg(long, global = true, value_name = "BYTES", value_parser = tenstore::remote::parse_size)]
    cache_size: Option<u64>,
    /// Bytes of records fetched one by one (ranged GETs) that one reader
    /// of a remote store holds in memory (suffixes K, M, G, T); default
    /// 256M. `serve` and `push` take a fresh reader before reaching it.
    #[cfg(feature = "s3")]
    #[arg(long, global = true, value_name = "BYTES", value_parser = tenstore::remote::parse_size)]
    reader_memory: Option<u64>,
}

#[derive(Subcommand)]
enum Command {
    Put(put::Args),
    Get(get::Args),
    Ls(ls::Args),
    Rm(rm::Args),
    Info(info::Args),
    Import(import::Args),
    Export(export::Args),
    Verify(verify::Args),
    Reindex(reindex::Args),
    Serve(serve::Args),
    Push(push::Args),
    Pull(pull::Args),
    #[cfg(feature = "s3")]
    Publish(publish::Args),
    Demo(demo::Args),
}

/// What every subcommand returns.
pub type CliResult = Result<(), Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    stores::set_adopt(cli.adopt);
    #[cfg(feature = "s3")]
    stores::set_remote(cli.cache, cli.cache_size, cli.reader_memory);
    let result = match cli.command {
        Command::Put(args) => put::run(args),
        Command::Get(args) => get::run(args),
        Command::Ls(args) => ls::run(args),
        Command::Rm(args) => rm::run(args),
        Command::Info(args) => info::run(args),
        Command::Import(args) => import::run(args),
        Command::Export(args) => export::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Reindex(args) => reindex::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Push(args) => push::run(args),
        Command::Pull(args) => pull::run(args),
        #[cfg(feature = "s3")]
        Command::Publish(args) => publish::run(args),
        Command::Demo(args) => demo::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = e.to_string().replace('\n', " ");
            eprintln!("tenstore: error: {msg}");
            ExitCode::from(1)
        }
    }
}
