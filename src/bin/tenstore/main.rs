//! The `tenstore` command line: a thin layer over the library, one module
//! per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;
mod info;
mod report;

/// Store and inspect tensors in webdataset's tenbin format.
#[derive(Parser)]
#[command(name = "tenstore", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Info(info::Args),
    Demo(demo::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(args) => info::run(args),
        Command::Demo(args) => demo::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tenstore: error: {e}");
            ExitCode::from(1)
        }
    }
}
