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
//! claimed work. All sharing is through atomics and uncontended locks: no `unsafe`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

/// The operand of the product being shared, prepared once by the calling thread.
#[derive(Default)]
pub(super) struct BoardInput {
    /// One prepared int8 row per sequence, for generated kernels.
    pub rows: Vec<crate::jit::GemvRow>,
    /// `[rows, in_dim]` f32 operand, for f32 products.
    pub data: Vec<f32>,
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
        if spins % SPINS_PER_YIELD == 0 {
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
    /// chunk's output to `gather` in order.
    pub fn run(&self, runner: &dyn ChunkRunner, op: usize, chunks: usize, mut gather: impl FnMut(usize, &[f32])) {
        let chunks = chunks.clamp(1, self.max_chunks());
        let epoch = {
            let mut job = lock(&self.job);
            let epoch = job.epoch + 1;
            *job = Job { epoch, op, chunks };
            self.done.store(0, Ordering::SeqCst);
            self.claim.store(epoch << 32, Ordering::SeqCst);
            self.epoch.store(epoch, Ordering::SeqCst);
            epoch
        };
        self.work(runner, Job { epoch, op, chunks });
        wait_until(|| self.done.load(Ordering::Acquire) == chunks);
        for c in 0..chunks {
            gather(c, &lock(&self.outs[c]));
        }
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
            {
                let input = self.input.read().unwrap_or_else(|p| p.into_inner());
                runner.run_chunk(job.op, next, job.chunks, &input, &mut lock(&self.outs[next]));
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
                    board.run(&Squares, op, 5, |c, out| got.push((op, c, out.to_vec())));
                }
                board.finish();
            });
            let want: Vec<_> = (0..50).flat_map(|op| (0..5).map(move |c| (op, c, vec![(op * 100 + c) as f32, 2.0 * (op * 100 + c) as f32]))).collect();
            assert_eq!(got, want, "{helpers} helpers");
        }
    }
}
