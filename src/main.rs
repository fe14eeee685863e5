//! `hookrelay` binary: parse arguments, run the command, exit with its code.

use clap::Parser;

fn main() {
    let cli = hookrelay::cli::Cli::parse();
    std::process::exit(hookrelay::cli::main(cli));
}
