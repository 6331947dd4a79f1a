//! The process heap: bytes in use for `/metrics`, and free memory handed back to the kernel.
//!
//! glibc keeps freed memory in its arenas (up to 8 per core): after rounds of attacks whose
//! connections, frames and queues were all freed (18 MiB in use), anonymous RSS had grown from
//! 29 to 103 MiB, fragmented over many arenas, and trimming alone did not return it. With one
//! arena per core and a trim every 5 s it came back to 14-15 MiB each round
//! (`web/tests/hostile.test.mjs`, memory test).
#![allow(unsafe_code)]

use std::time::Duration;

/// Bytes allocated and not yet freed (glibc's `mallinfo2`: in-use arena and mmapped chunks).
pub fn in_use() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's counters and returns them by value.
        let m = unsafe { libc::mallinfo2() };
        (m.uordblks + m.hblkhd) as u64
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        0
    }
}

/// Allocations at or above this size are mmapped and unmapped on free.
const MMAP_THRESHOLD: usize = 256 * 1024;

/// At most one malloc arena per core, and a fixed mmap threshold; call first thing, before
/// threads start.
///
/// glibc raises its mmap threshold to the size of the largest mmapped block freed (up to
/// 32 MiB): once an attack's 0.5-1 MB frames were freed, later large buffers came from the
/// arenas and fragmented them. In the 30-minute soak anonymous RSS crept +6.3% with swings of
/// 20 MiB between rounds; with the threshold fixed at 256 KiB, +4.5% over 20 minutes and no
/// swings (`bench/README.md`, soak runs 2 and 3). The cost, an mmap and munmap per buffer
/// above 256 KiB, is measured there too (`sfu-fanout`, `ladder`).
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(2);
        // SAFETY: mallopt sets allocator tunables; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, cores.min(64) as libc::c_int);
            // glibc's own variable, when set, wins (it is how the soak compared the two).
            if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
            }
        }
    }
}

/// Hands the arenas' free pages back to the kernel.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the arenas' own locks; it frees nothing that is in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trims every `every` for the life of the process (a few milliseconds of one thread each time).
pub fn spawn_trimmer(every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            tokio::task::spawn_blocking(trim);
        }
    });
}

/// `/metrics` lines.
pub fn render(out: &mut String) {
    metrics_text::Exposition::new(out).gauge("aula_heap_in_use_bytes", in_use());
}
