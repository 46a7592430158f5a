//! The `mpo-run` binary: glue over the library (see `cli`).

fn main() {
    std::process::exit(mpo_run::cli::main());
}
