//! The process's memory allocator: mimalloc, set to give freed memory back to the
//! operating system at once.
//!
//! Chosen by measurement (release builds of one commit, glibc's allocator against
//! this one, on the README's 2-core machine while it was shared with builds, so CPU
//! time rather than wall time):
//!
//! - `cargo bench --bench analytics -- 50000`: the report's CPU time 1.69–1.82 s →
//!   1.35–1.40 s, the export's 2.08–2.66 s → 2.04 s and its resident memory 198 → 99
//!   MiB. `perf record -g` had put a third of their time in glibc's malloc and free
//!   (`malloc_consolidate`, `unlink_chunk`).
//! - `cargo bench --bench store -- 200000 64 fjall`: CPU per order 76–80 → 73–74 µs,
//!   resident memory 76–78 → 70–72 MiB.
//!
//! With mimalloc's defaults the store bench's resident memory was 116 MiB: freed
//! pages stay mapped a while (a 10 ms purge delay) in every thread's heap. A daemon
//! whose memory is watched wants them back, so purging is immediate and arenas are
//! committed as they are used, not eagerly.

/// mimalloc, for every binary built on this library (the daemon, the benches, the
/// tests).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` and `mi_option_purge_delay` in mimalloc's
/// `mi_option_e` (v3, `include/mimalloc.h` of libmimalloc-sys 0.1.49, which
/// Cargo.lock pins; it does not name them).
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets the allocator's options: call first thing in `main`. An option given in
/// mimalloc's own environment variable (`MIMALLOC_PURGE_DELAY`, …) is left as given.
pub fn tune() {
    for (option, env, value) in
        [(PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 0), (ARENA_EAGER_COMMIT, "MIMALLOC_ARENA_EAGER_COMMIT", 0)]
    {
        if std::env::var_os(env).is_none() {
            // SAFETY: `mi_option_set` only stores an integer in mimalloc's option
            // table; it may be called at any time from any thread.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
}
