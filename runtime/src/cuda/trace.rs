//! The device-side timeline of decode steps (`quambac cuda trace`): the events the kernels record
//! when their source is built with `QUAMBA_TRACE` (see `quamba.cuh`), assigned to launches.
//!
//! A step's time is a chain of dependent launches, and what a change saves depends on which link
//! it shortens: the time from a launch's start until its dependency wait returns (overlapped with
//! the launch before), the work after the wait, or the gap between the previous launch's last
//! block ending and this one's wait returning (how long completion takes to propagate). Per-launch
//! timings with events between launches, or a kernel taken out of the graph, cannot separate
//! those; the blocks' own clocks can.

/// The line that builds a plan's source with the timeline hooks, holding `events` events.
pub fn traced_source(source: &str, events: usize) -> String {
    format!("#define QUAMBA_TRACE {events}\n{source}")
}

/// The events a traced source holds, if it is one.
pub(super) fn capacity(source: &str) -> Option<usize> {
    source.strip_prefix("#define QUAMBA_TRACE ")?.lines().next()?.trim().parse().ok()
}

/// One block's record (`QuambaTraceEvent`): %globaltimer nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockEvent {
    pub begin: u64,
    /// When its dependency wait returned (0: the block never waited).
    pub waited: u64,
    /// When what it reads first had landed, for its latest warp: a product's weights in shared
    /// memory, a row kernel's row, a scan's step inputs (0: the kernel does not mark it).
    pub landed: u64,
    /// When its latest warp's sums were done: a product's dot products, a row kernel's
    /// reduction, a scan's state update (0: the kernel does not mark it).
    pub summed: u64,
    pub end: u64,
    /// The entry point's index in the generated source.
    pub entry: u32,
    pub block: u32,
}

impl BlockEvent {
    /// Size of the C struct on the device.
    pub const BYTES: usize = 48;

    /// Decodes the device's array of events (little-endian C layout: five u64, two u32).
    pub fn parse(bytes: &[u8]) -> Vec<BlockEvent> {
        let u64_at = |c: &[u8], i: usize| u64::from_le_bytes(c[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |c: &[u8], i: usize| u32::from_le_bytes(c[i..i + 4].try_into().expect("4 bytes"));
        bytes
            .chunks_exact(Self::BYTES)
            .map(|c| BlockEvent { begin: u64_at(c, 0), waited: u64_at(c, 8), landed: u64_at(c, 16), summed: u64_at(c, 24), end: u64_at(c, 32), entry: u32_at(c, 40), block: u32_at(c, 44) })
            .collect()
    }
}

/// A launch the step issued: the graph value it computes, its kernel, its entry point's index
/// (None: the kernel records nothing) and its blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedLaunch {
    pub value: String,
    pub kernel: String,
    pub entry: Option<u32>,
    pub blocks: usize,
}

/// One launch of one step on the timeline, in nanoseconds from the step's first block.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchSpan {
    pub value: String,
    pub kernel: String,
    pub blocks: usize,
    /// The first block's begin.
    pub start: f64,
    /// The last block's begin (how long the launch took to become resident).
    pub last_start: f64,
    /// When the last block's wait returned (None: no block waited).
    pub waited: Option<f64>,
    /// When the last block's first reads had landed (None: the kernel does not mark it).
    pub landed: Option<f64>,
    /// When the last block's sums were done (None: the kernel does not mark it).
    pub summed: Option<f64>,
    /// The median over blocks of the time from its own wait returning to its end: a block's
    /// work, where `end - waited` also holds the stragglers.
    pub block_after_wait: Option<f64>,
    /// The median over blocks of the time from its own wait returning to its first reads
    /// landing: for a block whose reads were requested long before its wait, the work that sits
    /// between the two (a product's activation staging, or a norm prologue).
    pub block_landed_after_wait: Option<f64>,
    /// The median over blocks of the time from its own wait returning to its sums being done.
    pub block_summed_after_wait: Option<f64>,
    /// The median block's begin.
    pub median_start: f64,
    /// Blocks that began only after the previous launch's last block had ended: where they
    /// were not resident beside it (its shared memory, registers or threads were still held),
    /// their weights could not stream in before their wait.
    pub late_blocks: usize,
    /// The last block's end.
    pub end: f64,
}

/// Why events could not be assigned.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("the trace holds {held} events, the steps recorded {recorded}: trace fewer steps or a smaller model")]
    Overflow { held: usize, recorded: usize },
    #[error("launch {launch} ({kernel}) of step {step} should have {blocks} blocks' events, {left} are left")]
    Missing { launch: String, kernel: String, step: usize, blocks: usize, left: usize },
}

/// Assigns the events of `steps` replays of the launch sequence `issued` to its launches, step by
/// step. A launch's blocks all begin before any block of the launch after next (that one is
/// scheduled only once the next one's blocks have passed their wait, which needs this launch
/// complete), and before any block of the next launch of the same kernel; so each entry point's
/// events, in order of their begin, are its launches' blocks in issue order.
pub fn assign(events: &[BlockEvent], recorded: usize, issued: &[IssuedLaunch], steps: usize) -> Result<Vec<Vec<LaunchSpan>>, TraceError> {
    if recorded > events.len() {
        return Err(TraceError::Overflow { held: events.len(), recorded });
    }
    let mut by_entry: std::collections::HashMap<u32, Vec<BlockEvent>> = std::collections::HashMap::new();
    for e in events {
        by_entry.entry(e.entry).or_default().push(*e);
    }
    for list in by_entry.values_mut() {
        list.sort_by_key(|e| (e.begin, e.block));
    }
    let mut taken: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(steps);
    for step in 0..steps {
        let mut spans: Vec<LaunchSpan> = Vec::new();
        for launch in issued {
            let Some(entry) = launch.entry else { continue };
            let list = by_entry.get(&entry).map_or(&[][..], |l| l.as_slice());
            let from = *taken.get(&entry).unwrap_or(&0);
            let left = list.len() - from.min(list.len());
            if left < launch.blocks {
                return Err(TraceError::Missing { launch: launch.value.clone(), kernel: launch.kernel.clone(), step, blocks: launch.blocks, left });
            }
            let blocks = &list[from..from + launch.blocks];
            taken.insert(entry, from + launch.blocks);
            let waited = blocks.iter().map(|b| b.waited).filter(|w| *w > 0).max();
            let landed = blocks.iter().map(|b| b.landed).filter(|l| *l > 0).max();
            let summed = blocks.iter().map(|b| b.summed).filter(|l| *l > 0).max();
            // The median over the blocks that waited (and made the mark) of mark - wait.
            let median_after_wait = |mark: fn(&BlockEvent) -> u64| {
                let mut spans: Vec<u64> = blocks.iter().filter(|b| b.waited > 0 && mark(b) > 0).map(|b| mark(b).saturating_sub(b.waited)).collect();
                spans.sort_unstable();
                spans.get(spans.len() / 2).map(|w| *w as f64)
            };
            // `blocks` are in order of their begin (each entry's list is sorted above).
            let previous_end = spans.last().map(|p: &LaunchSpan| p.end as u64);
            let late_blocks = previous_end.map_or(0, |e| blocks.len() - blocks.partition_point(|b| b.begin <= e));
            spans.push(LaunchSpan {
                value: launch.value.clone(),
                kernel: launch.kernel.clone(),
                blocks: launch.blocks,
                start: blocks.first().map_or(0, |b| b.begin) as f64,
                last_start: blocks.last().map_or(0, |b| b.begin) as f64,
                waited: waited.map(|w| w as f64),
                landed: landed.map(|l| l as f64),
                summed: summed.map(|l| l as f64),
                block_after_wait: median_after_wait(|b| b.end),
                block_landed_after_wait: median_after_wait(|b| b.landed),
                block_summed_after_wait: median_after_wait(|b| b.summed),
                median_start: blocks.get(blocks.len() / 2).map_or(0, |b| b.begin) as f64,
                late_blocks,
                end: blocks.iter().map(|b| b.end).max().unwrap_or(0) as f64,
            });
        }
        let origin = spans.iter().map(|s| s.start).fold(f64::INFINITY, f64::min);
        for s in &mut spans {
            s.start -= origin;
            s.last_start -= origin;
            s.median_start -= origin;
            s.end -= origin;
            s.waited = s.waited.map(|w| w - origin);
            s.landed = s.landed.map(|l| l - origin);
            s.summed = s.summed.map(|l| l - origin);
        }
        out.push(spans);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(entry: u32, block: u32, begin: u64, waited: u64, end: u64) -> BlockEvent {
        BlockEvent { begin, waited, landed: 0, summed: 0, end, entry, block }
    }

    fn launch(value: &str, entry: Option<u32>, blocks: usize) -> IssuedLaunch {
        IssuedLaunch { value: value.into(), kernel: format!("k{entry:?}"), entry, blocks }
    }

    #[test]
    fn events_go_to_their_launches_in_issue_order() {
        // Two steps of: a (entry 0, 2 blocks), b (entry 1, 1 block), an untraced launch, a again.
        let issued = [launch("%1", Some(0), 2), launch("%2", Some(1), 1), launch("%3", None, 1), launch("%4", Some(0), 2)];
        let mut events = vec![
            ev(0, 1, 1000, 1100, 1500),
            ev(0, 0, 1010, 1090, 1400),
            ev(1, 0, 1200, 1600, 2000),
            ev(0, 0, 1700, 2100, 2300),
            ev(0, 1, 1710, 2050, 2400),
            // step 2, shifted by 10 µs
            ev(0, 0, 11000, 11100, 11500),
            ev(0, 1, 11000, 11050, 11450),
            ev(1, 0, 11300, 11600, 12000),
            ev(0, 0, 11800, 12100, 12300),
            ev(0, 1, 11810, 12150, 12350),
        ];
        events.reverse(); // the device appends in completion order, not begin order
        let steps = assign(&events, events.len(), &issued, 2).unwrap();
        assert_eq!(steps.len(), 2);
        let first = &steps[0];
        assert_eq!(first.iter().map(|s| s.value.as_str()).collect::<Vec<_>>(), ["%1", "%2", "%4"]);
        assert_eq!((first[0].start, first[0].waited, first[0].end), (0.0, Some(100.0), 500.0));
        // Blocks began at 0 and 10; one worked 310 ns after its wait, the other 400: the upper median.
        assert_eq!((first[0].last_start, first[0].block_after_wait, first[0].landed, first[0].summed), (10.0, Some(400.0), None, None));
        assert_eq!((first[0].block_landed_after_wait, first[0].block_summed_after_wait), (None, None));
        assert_eq!((first[1].start, first[1].waited, first[1].end), (200.0, Some(600.0), 1000.0));
        assert_eq!((first[2].start, first[2].waited, first[2].end), (700.0, Some(1100.0), 1400.0));
        // %2 ended at 1000 (step time); %4's blocks began at 700 and 710: none late, and its
        // median (upper) block began at 710. %2's one block began at 200, before %1's end at 500.
        assert_eq!((first[2].late_blocks, first[2].median_start, first[1].late_blocks, first[0].late_blocks), (0, 710.0, 0, 0));
        let second = &steps[1];
        assert_eq!((second[0].start, second[0].end), (0.0, 500.0));
        assert_eq!((second[2].start, second[2].waited, second[2].end), (800.0, Some(1150.0), 1350.0));
        // Step 2's %4 began at 800 and 810 (step time), %2 ended at 1000: still none late.
        assert_eq!(second[2].late_blocks, 0);
    }

    #[test]
    fn blocks_beginning_after_the_previous_launch_ended_are_counted_late() {
        // a's one block ends at 1000; b's three blocks begin at 900 (beside it), 1000 (as it
        // ends: not late) and 1300 (after it).
        let issued = [launch("%1", Some(0), 1), launch("%2", Some(1), 3)];
        let events = [ev(0, 0, 0, 100, 1000), ev(1, 0, 900, 1100, 1500), ev(1, 1, 1000, 1100, 1600), ev(1, 2, 1300, 1350, 1700)];
        let step = &assign(&events, events.len(), &issued, 1).unwrap()[0];
        assert_eq!((step[0].late_blocks, step[1].late_blocks, step[1].median_start), (0, 1, 1000.0));
    }

    #[test]
    fn medians_after_the_wait_are_per_block() {
        // Three blocks: waits at 100, 200, 900; landed 50, 400, 300 ns after; sums 60, 500, 500
        // after. The last block's marks (1200, 1400) say nothing about the typical block.
        let issued = [launch("%1", Some(0), 3)];
        let marks = |b: BlockEvent, landed: u64, summed: u64| BlockEvent { landed, summed, ..b };
        let events = [marks(ev(0, 0, 0, 100, 2000), 150, 160), marks(ev(0, 1, 10, 200, 2000), 600, 700), marks(ev(0, 2, 20, 900, 2000), 1200, 1400)];
        let step = &assign(&events, events.len(), &issued, 1).unwrap()[0];
        assert_eq!((step[0].block_landed_after_wait, step[0].block_summed_after_wait), (Some(300.0), Some(500.0)));
        assert_eq!((step[0].landed, step[0].summed), (Some(1200.0), Some(1400.0)));
    }

    #[test]
    fn too_few_events_are_an_error_not_a_wrong_timeline() {
        let issued = [launch("%1", Some(0), 3)];
        let events = [ev(0, 0, 1, 2, 3), ev(0, 1, 1, 2, 3)];
        assert!(matches!(assign(&events, 2, &issued, 1), Err(TraceError::Missing { blocks: 3, left: 2, .. })));
        assert!(matches!(assign(&events, 5, &issued, 1), Err(TraceError::Overflow { held: 2, recorded: 5 })));
    }

    #[test]
    fn the_device_layout_round_trips_and_the_capacity_is_read_back() {
        let mut bytes = Vec::new();
        for v in [7u64, 8, 6, 5, 9] {
            bytes.extend(v.to_le_bytes());
        }
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(4u32.to_le_bytes());
        assert_eq!(bytes.len(), BlockEvent::BYTES);
        assert_eq!(BlockEvent::parse(&bytes), [BlockEvent { landed: 6, summed: 5, ..ev(3, 4, 7, 8, 9) }]);
        assert_eq!(capacity(&traced_source("// kernels", 4096)), Some(4096));
        assert_eq!(capacity("// kernels"), None);
    }
}
