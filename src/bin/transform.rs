//! `transform`: the offline dry run, kept as an alias of `rudder-kustomer plan`.

#[cfg(feature = "deliver")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use rudder_kustomer::cli::{run, Command};

fn main() -> std::process::ExitCode {
    run(
        "transform",
        Command::Plan,
        std::env::args_os().skip(1).collect(),
    )
}
