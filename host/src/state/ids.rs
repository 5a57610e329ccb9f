//! Record and timer ids (DESIGN.md, "Decisions for the second wave": ids
//! come from the backend, never from a per-process clock alone).
//!
//! - [`ClockIds`] serve the local backends: microseconds since the Unix
//!   epoch, bumped past the last id handed out and past a floor read from
//!   the store at open (redb keeps the highest id it has written), so a
//!   clock that goes back cannot hand out an id again.
//! - [`BlockIds`] serve PostgreSQL: blocks of [`BLOCK`] ids taken from a
//!   sequence. The next block is fetched in the background when half of the
//!   current one is used, so handing out an id never waits on the network.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;

/// See the module doc.
#[derive(Debug, Default)]
pub struct ClockIds {
    last: AtomicU64,
}

impl ClockIds {
    /// Ids above `floor`.
    pub fn above(floor: u64) -> ClockIds {
        ClockIds {
            last: AtomicU64::new(floor),
        }
    }

    /// The next id.
    pub fn next(&self) -> u64 {
        let now = super::now_ms().saturating_mul(1000);
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }
}

/// Ids a sequence hands out per `nextval` (its `INCREMENT BY`).
pub const BLOCK: u64 = 1 << 20;

/// See the module doc.
#[derive(Debug)]
pub struct BlockIds {
    inner: Mutex<Blocks>,
    /// Wakes the task that fetches the next block.
    want: Notify,
}

#[derive(Debug)]
struct Blocks {
    next: u64,
    end: u64,
    spare: Option<u64>,
    asked: bool,
}

impl BlockIds {
    /// Ids from the block that starts at `start`.
    pub fn starting(start: u64) -> BlockIds {
        BlockIds {
            inner: Mutex::new(Blocks {
                next: start,
                end: start + BLOCK,
                spare: None,
                asked: false,
            }),
            want: Notify::new(),
        }
    }

    /// The next id. Past the end of a block with no next block fetched yet
    /// (the database was unreachable for half a block of ids), it goes on
    /// counting, and the next block starts above what was handed out.
    pub fn next(&self) -> u64 {
        let mut b = self.inner.lock();
        if b.next >= b.end
            && let Some(start) = b.spare.take()
        {
            b.next = b.next.max(start);
            b.end = start + BLOCK;
            b.asked = false;
        }
        let id = b.next;
        b.next += 1;
        if b.spare.is_none() && !b.asked && b.end.saturating_sub(b.next) < BLOCK / 2 {
            b.asked = true;
            self.want.notify_one();
        }
        id
    }

    /// Waits until a block is wanted.
    pub async fn wanted(&self) {
        self.want.notified().await;
    }

    /// Hands over the block that starts at `start`; `false`: the fetch
    /// failed, so it is asked for again.
    pub fn fetched(&self, start: Option<u64>) {
        let mut b = self.inner.lock();
        match start {
            Some(start) => b.spare = Some(start),
            None => {
                b.asked = false;
                drop(b);
                self.want.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_ids_increase_above_the_floor() {
        let far = u64::MAX / 2;
        let ids = ClockIds::above(far);
        let (a, b) = (ids.next(), ids.next());
        assert!(a > far && b > a);
    }

    #[test]
    fn block_ids_ask_for_the_next_block_at_half_and_never_repeat() {
        let ids = BlockIds::starting(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..BLOCK / 2 + 1 {
            assert!(seen.insert(ids.next()));
        }
        assert!(ids.inner.lock().asked, "the next block was asked for");
        // The database answers late: ids go on past the block's end…
        for _ in 0..BLOCK {
            assert!(seen.insert(ids.next()));
        }
        // …and the block it hands over later starts above all of them.
        ids.fetched(Some(1 + BLOCK));
        for _ in 0..10 {
            assert!(seen.insert(ids.next()));
        }
    }
}
