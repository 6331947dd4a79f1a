//! The forwarding hot path allocates nothing per frame: a counting allocator counts every
//! allocation made while `Room::forward` runs (its calls into str0m's writer excepted, see
//! `sfu::hot_path`) through seconds of simulcast video and audio to many subscribers, layer
//! switches and keyframe requests included.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::World;
use sfu::Quality;

struct Counting;

static IN_FORWARD: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed to the system allocator unchanged; the count is a side effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn count() {
    if sfu::hot_path::in_forward() {
        IN_FORWARD.fetch_add(1, Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn forwarding_allocates_nothing_per_frame() {
    let mut w = World::new();
    w.whip_publisher("creator", true);
    let talker = w.room_publisher("tutor", false);
    let mut viewers = Vec::new();
    for (i, q) in [Quality::Low, Quality::Medium, Quality::High]
        .into_iter()
        .cycle()
        .take(12)
        .enumerate()
    {
        viewers.push(w.whep_viewer(&format!("viewer{i}"), q));
    }
    // Warm-up: connections, the first keyframes, vectors grown to their working size.
    w.run(Duration::from_secs(3));
    let before = IN_FORWARD.load(Ordering::Relaxed);
    let frames_before = w.metrics.frames_forwarded.load(Ordering::Relaxed);

    w.run(Duration::from_secs(4));
    // Layer switches (at the next keyframe, with a keyframe request) while measuring.
    for &v in &viewers[..3] {
        let pid = w.pid(v);
        w.sfu
            .set_preference(w.now, pid, None, Quality::Low)
            .expect("preference");
    }
    w.run(Duration::from_secs(4));

    let allocations = IN_FORWARD.load(Ordering::Relaxed) - before;
    let frames = w.metrics.frames_forwarded.load(Ordering::Relaxed) - frames_before;
    assert!(
        frames > 12 * 8 * 30,
        "frames forwarded while measuring: {frames}"
    );
    assert!(w.client(talker).connected);
    assert_eq!(
        allocations, 0,
        "Room::forward allocated {allocations} times over {frames} forwarded frames"
    );
}
