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
//! pages stay mapped a while (a purge delay: a second in the mimalloc pinned now) in
//! every thread's heap. A daemon whose memory is watched wants them back, so purging
//! is immediate and arenas are committed as they are used, not eagerly.
//!
//! And no transparent huge pages. mimalloc asks the kernel for them on the memory it
//! maps (`madvise(MADV_HUGEPAGE)`, which the common `madvise` setting grants): one
//! small block in use then keeps 2 MiB resident, and purging a page of it frees
//! nothing. `scripts/bench.sh 300000 64`, release build, resident memory at the end
//! with THP (the default) against without: 100.5 → 75.8 MiB (anonymous 81 → 55 MiB),
//! orders/s within the machine's noise (5 876 against 6 081).

/// mimalloc, for every binary built on this library (the daemon, the benches, the
/// tests). The `system-allocator` feature leaves the C library's allocator in place,
/// for heap profilers that follow `malloc` (`heaptrack`): see the performance
/// chapter, "Where the memory goes".
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` and `mi_option_purge_delay` in mimalloc's
/// `mi_option_e` (v3, `include/mimalloc.h` of libmimalloc-sys 0.1.49, which
/// Cargo.lock pins; it does not name them).
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// `mi_option_allow_thp`, likewise.
const ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// Sets the allocator's options: call first thing in `main`. An option given in
/// mimalloc's own environment variable (`MIMALLOC_PURGE_DELAY`, …) is left as given.
pub fn tune() {
    if cfg!(feature = "system-allocator") {
        return;
    }
    for (option, env, value) in [
        (PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 0),
        (ARENA_EAGER_COMMIT, "MIMALLOC_ARENA_EAGER_COMMIT", 0),
        (ALLOW_THP, "MIMALLOC_ALLOW_THP", 0),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: `mi_option_set` only stores an integer in mimalloc's option
            // table; it may be called at any time from any thread.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        no_huge_pages();
    }
}

/// Turns transparent huge pages off for the whole process, memory mapped before
/// `main` included: mimalloc reads `allow_thp` when it starts, before `tune` can set
/// it, and has advised huge pages on its first arena by then. (This is what mimalloc
/// itself does when `MIMALLOC_ALLOW_THP=0` is in its environment.)
fn no_huge_pages() {
    // SAFETY: `PR_SET_THP_DISABLE` takes integer arguments only and sets a flag on
    // this process; it fails harmlessly (EINVAL) on kernels without it.
    let done = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if done != 0 {
        // Before logging is set up: the process works as before, with more memory.
        eprintln!("note: transparent huge pages could not be turned off: {}", std::io::Error::last_os_error());
    }
}

#[cfg(all(test, not(feature = "system-allocator")))]
mod tests {
    /// The option numbers name the options they mean in the mimalloc that Cargo.lock
    /// pins (another mimalloc could renumber them): each reads its default (`src/options.c`
    /// of that mimalloc) before `tune`, and what `tune` sets after.
    #[test]
    fn option_numbers_are_mimallocs() {
        // SAFETY: reading mimalloc's option table.
        let read = |o| unsafe { libmimalloc_sys::mi_option_get(o) };
        let options = [super::PURGE_DELAY, super::ARENA_EAGER_COMMIT, super::ALLOW_THP];
        assert_eq!(options.map(read), [1000, 2, 1], "mimalloc's defaults: purge_delay, arena_eager_commit, allow_thp");
        super::tune();
        assert_eq!(options.map(read), [0, 0, 0]);
        // SAFETY: a flag read, no arguments.
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) }, 1, "THP off for the process");
    }
}
