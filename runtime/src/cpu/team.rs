//! The threads of one decode step: the calling thread walks the step plan, and helper threads
//! share only its large products, claiming chunks of output features from a board.
//!
//! Why not a rayon fork per product: a decode step of these models has 25–50 products of a few
//! tens of microseconds each, with serial ops between them. An idle rayon worker goes to sleep
//! after a short spin, so nearly every fork paid a futex wake-up and a context switch (a fifth
//! of a W4A8 step in perf). Here the helpers are started once per step (one rayon job each) and
//! spin, yielding the CPU when a wait grows long, between products.
//!
//! Claiming is dynamic: the calling thread also claims chunks, so a step finishes even when no
//! helper ever starts (one thread, or a busy pool); nothing waits for a helper that has not
//! claimed work. Sharing is through atomics and uncontended locks, except the recurrent state of
//! a scan / SSD step, which chunks update in place through [`SharedState`] (the one `unsafe`
//! here, argued where it is).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

/// Spins before each yield while waiting.
const SPINS_PER_YIELD: u32 = 64;
/// `epoch` value that tells helpers the step is over.
const FINISHED: u64 = u64::MAX;

/// What a helper runs: chunk `c` of product `op` of the plan.
pub(super) trait ChunkRunner: Sync {
    /// Computes chunk `chunk` of `chunks` of product `op` (an index the caller chose when
    /// publishing it) into `out`.
    fn run_chunk(&self, op: usize, chunk: usize, chunks: usize, input: &BoardInput, out: &mut Vec<f32>);
}

/// The operands of the op being shared, prepared once by the calling thread.
#[derive(Default)]
pub(super) struct BoardInput {
    /// One prepared int8 row per sequence, for generated kernels.
    pub rows: Vec<crate::jit::GemvRow>,
    /// `[rows, in_dim]` f32 operand, for f32 products.
    pub data: Vec<f32>,
    /// The f32 operands of a scan / SSD step, in operand order.
    pub operands: Vec<Vec<f32>>,
    /// The recurrent state that step updates, split between chunks.
    pub state: Option<SharedState>,
}

/// A step's recurrent state, lent to the team for one [`Board::run`]: each chunk updates the
/// disjoint ranges of it that its index selects.
pub(super) struct SharedState {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: `SharedState` is a pointer to f32 values lent by a `&mut` borrow (see `lend`); moving it
// to or sharing it with another thread is sound because every access goes through `range`, whose
// contract makes concurrent accesses disjoint.
unsafe impl Send for SharedState {}
// SAFETY: as above.
unsafe impl Sync for SharedState {}

impl SharedState {
    /// Lends `state` to the team. The caller must not touch `state` (nor let it be freed or moved)
    /// until it has taken this value back out of the board after [`Board::run`] returned, which
    /// `Board::run_with_state` does.
    fn lend(state: &mut [f32]) -> SharedState {
        SharedState { ptr: state.as_mut_ptr(), len: state.len() }
    }

    /// The values `range` of the lent state.
    ///
    /// # Safety
    /// Ranges used at the same time (by different chunks) must be disjoint; only the chunk that
    /// claimed an index may use the ranges that index selects.
    #[allow(clippy::mut_from_ref, reason = "a loan split by the safety contract above, like `split_at_mut` across threads")]
    pub unsafe fn range(&self, range: std::ops::Range<usize>) -> &mut [f32] {
        assert!(range.start <= range.end && range.end <= self.len, "state range out of bounds");
        // SAFETY: in bounds (asserted); the lender's `&mut` borrow is held, unused, for as long as
        // this value is in the board (`run_with_state`), so nothing else aliases the memory; the
        // caller guarantees that no other live reference overlaps `range`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.end - range.start) }
    }
}

/// The product being shared.
#[derive(Clone, Copy)]
struct Job {
    epoch: u64,
    op: usize,
    chunks: usize,
}

/// Shared state of one step.
pub(super) struct Board {
    /// The current job's epoch; helpers poll it without locking.
    epoch: AtomicU64,
    job: Mutex<Job>,
    /// `epoch << 32 | next unclaimed chunk`.
    claim: AtomicU64,
    done: AtomicUsize,
    /// Whether a chunk of the current job panicked (caught: the job's outputs are lost).
    failed: AtomicBool,
    input: RwLock<BoardInput>,
    /// One output buffer per chunk (`[rows, chunk columns]`).
    outs: Vec<Mutex<Vec<f32>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another thread's chunk leaves plain numbers behind, nothing inconsistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits until `ready()` holds, spinning, then yielding the CPU.
fn wait_until(mut ready: impl FnMut() -> bool) {
    let mut spins = 0u32;
    while !ready() {
        spins += 1;
        if spins.is_multiple_of(SPINS_PER_YIELD) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

impl Board {
    /// A board for products of at most `max_chunks` chunks.
    pub fn new(max_chunks: usize) -> Board {
        Board {
            epoch: AtomicU64::new(0),
            job: Mutex::new(Job { epoch: 0, op: 0, chunks: 0 }),
            claim: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            input: RwLock::new(BoardInput::default()),
            outs: (0..max_chunks.max(1)).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// Most chunks a product may be split into.
    pub fn max_chunks(&self) -> usize {
        self.outs.len()
    }

    /// Resets the board for a new step (after a finished one).
    pub fn reset(&self) {
        let mut job = lock(&self.job);
        *job = Job { epoch: 0, op: 0, chunks: 0 };
        self.claim.store(0, Ordering::SeqCst);
        self.epoch.store(0, Ordering::SeqCst);
    }

    /// The operand buffers, for the calling thread to fill before [`Board::run`].
    pub fn input_mut(&self) -> std::sync::RwLockWriteGuard<'_, BoardInput> {
        self.input.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `chunks` chunks of product `op` on this thread and any helper, then hands each
    /// chunk's output to `gather` in order. False when a chunk panicked (then nothing is gathered).
    #[must_use]
    pub fn run(&self, runner: &dyn ChunkRunner, op: usize, chunks: usize, mut gather: impl FnMut(usize, &[f32])) -> bool {
        let chunks = chunks.clamp(1, self.max_chunks());
        let epoch = {
            let mut job = lock(&self.job);
            let epoch = job.epoch + 1;
            *job = Job { epoch, op, chunks };
            self.done.store(0, Ordering::SeqCst);
            self.failed.store(false, Ordering::SeqCst);
            self.claim.store(epoch << 32, Ordering::SeqCst);
            self.epoch.store(epoch, Ordering::SeqCst);
            epoch
        };
        self.work(runner, Job { epoch, op, chunks });
        wait_until(|| self.done.load(Ordering::Acquire) == chunks);
        if self.failed.load(Ordering::Acquire) {
            return false;
        }
        for c in 0..chunks {
            gather(c, &lock(&self.outs[c]));
        }
        true
    }

    /// [`Board::run`] with `state` lent to the chunks (see [`SharedState::range`]) for its duration.
    #[must_use]
    pub fn run_with_state(&self, runner: &dyn ChunkRunner, op: usize, chunks: usize, state: &mut [f32], gather: impl FnMut(usize, &[f32])) -> bool {
        self.input_mut().state = Some(SharedState::lend(state));
        // `run` does not unwind (chunks' panics are caught) and returns once every chunk is done,
        // so no range of the state is in use when the loan ends here.
        let ok = self.run(runner, op, chunks, gather);
        self.input_mut().state = None;
        ok
    }

    /// Tells the helpers the step is over.
    pub fn finish(&self) {
        self.epoch.store(FINISHED, Ordering::SeqCst);
    }

    /// A helper's loop: works on every job published until [`Board::finish`].
    pub fn help(&self, runner: &dyn ChunkRunner) {
        let mut seen = 0;
        loop {
            wait_until(|| self.epoch.load(Ordering::Acquire) != seen);
            let now = self.epoch.load(Ordering::Acquire);
            if now == FINISHED {
                return;
            }
            let job = *lock(&self.job);
            seen = job.epoch.max(now);
            self.work(runner, job);
        }
    }

    /// Claims and runs chunks of `job` until none is left (or a newer job replaced it).
    fn work(&self, runner: &dyn ChunkRunner, job: Job) {
        loop {
            let current = self.claim.load(Ordering::Acquire);
            let (epoch, next) = (current >> 32, (current & 0xFFFF_FFFF) as usize);
            if epoch != job.epoch || next >= job.chunks {
                return;
            }
            if self.claim.compare_exchange(current, current + 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
                continue;
            }
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let input = self.input.read().unwrap_or_else(|p| p.into_inner());
                runner.run_chunk(job.op, next, job.chunks, &input, &mut lock(&self.outs[next]));
            }));
            if ran.is_err() {
                self.failed.store(true, Ordering::Release);
            }
            self.done.fetch_add(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Squares;
    impl ChunkRunner for Squares {
        fn run_chunk(&self, op: usize, chunk: usize, _chunks: usize, input: &BoardInput, out: &mut Vec<f32>) {
            out.clear();
            out.extend(input.data.iter().map(|v| v * (op * 100 + chunk) as f32));
        }
    }

    #[test]
    fn every_chunk_runs_once_with_or_without_helpers() {
        for helpers in [0, 1, 3] {
            let board = Board::new(8);
            let mut got = Vec::new();
            rayon::scope(|s| {
                for _ in 0..helpers {
                    s.spawn(|_| board.help(&Squares));
                }
                for op in 0..50 {
                    board.input_mut().data = vec![1.0, 2.0];
                    assert!(board.run(&Squares, op, 5, |c, out| got.push((op, c, out.to_vec()))));
                }
                board.finish();
            });
            let want: Vec<_> = (0..50).flat_map(|op| (0..5).map(move |c| (op, c, vec![(op * 100 + c) as f32, 2.0 * (op * 100 + c) as f32]))).collect();
            assert_eq!(got, want, "{helpers} helpers");
        }
    }
}
