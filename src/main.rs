//! `hookrelay` binary: parse arguments, run the command, exit with its code.

use clap::Parser;

fn main() {
    std::process::exit(hookrelay::Cli::parse().run());
}
