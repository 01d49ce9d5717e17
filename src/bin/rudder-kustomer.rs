//! `rudder-kustomer plan|send`: see `rudder_kustomer::cli`.

#[cfg(feature = "deliver")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    rudder_kustomer::cli::main(std::env::args_os().skip(1).collect())
}
