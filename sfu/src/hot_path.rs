//! Marks the forwarding hot path (`Room::forward`, once per media frame) so that a counting
//! allocator in a test can prove aula's own code there allocates nothing
//! (`sfu/tests/forward_allocations.rs`). The calls into str0m's writer inside it are left out
//! of the mark: str0m allocates as it queues and packetizes (`docs/decisions.md`), which aula
//! cannot change from here. The mark is one thread-local flag: a few nanoseconds per frame.

use std::cell::Cell;

thread_local! {
    static IN_FORWARD: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is inside the marked part of `Room::forward` now. Safe to call from a
/// global allocator: the flag has no lazy initialisation and no destructor.
pub fn in_forward() -> bool {
    IN_FORWARD.try_with(Cell::get).unwrap_or(false)
}

fn set(v: bool) -> bool {
    IN_FORWARD.try_with(|c| c.replace(v)).unwrap_or(false)
}

/// Sets the mark until dropped, then puts back what it was.
pub(crate) struct Mark(bool);

impl Mark {
    /// Inside `Room::forward`.
    pub(crate) fn forwarding() -> Mark {
        Mark(set(true))
    }

    /// A call out of aula's code (into str0m) while forwarding: not counted.
    pub(crate) fn outside() -> Mark {
        Mark(set(false))
    }
}

impl Drop for Mark {
    fn drop(&mut self) {
        set(self.0);
    }
}
