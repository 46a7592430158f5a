//! The `mpo-run` binary: glue over the library (see `cli`).

fn main() {
    keep_freed_memory();
    std::process::exit(mpo_run::cli::main());
}

/// glibc's malloc serves blocks above a dynamic mmap threshold with fresh
/// mappings and trims the heap's top beyond 128 KiB, so the tens of MB of
/// temporaries a training step allocates and frees are mapped, faulted in
/// page by page and unmapped again at every step (#27: kernel time that
/// grows with sequence length). Keep freed memory instead: blocks up to
/// 32 MiB (glibc's largest allowed threshold) come from the heap, and the
/// heap is not trimmed below 512 MiB. Measured on the agent's SFT: about
/// 12% less wall time. `GLIBC_TUNABLES` set by the caller wins.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        // SAFETY: mallopt only changes allocator parameters; it is called
        // before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
        }
    }
}
