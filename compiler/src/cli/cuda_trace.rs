//! `quambac cuda trace`: where a decode step's time goes on the GPU, launch by launch, from the
//! blocks' own clocks (`runtime::cuda::traced_source`): when each launch's first and last blocks
//! began, when its dependency wait returned for its last block, when its last block's first
//! reads had landed (a product's weights in shared memory, a row kernel's row) and its sums were
//! done (where the kernel marks them), when its last block ended, and the median block's work
//! after its own wait. A table (means over the steps after the first), and
//! optionally the last step drawn as an SVG timeline.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use plotters::prelude::*;
use runtime::cuda::LaunchSpan;

/// Arguments of `quambac cuda trace`.
#[derive(clap::Args, Debug)]
pub struct TraceArgs {
    /// Checkpoint directory or .qmb artifact (default: the embedded mamba2-tiny).
    model: Option<PathBuf>,
    /// Sequences per decode step.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Decode steps traced (the first is left out of the means).
    #[arg(long, default_value_t = 4)]
    steps: usize,
    /// Block events the device holds (48 bytes each); every block of every launch records one.
    #[arg(long, default_value_t = 1 << 20)]
    events: usize,
    /// Also draw the last step's timeline here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Print the per-launch means as one JSON line instead of a table.
    #[arg(long)]
    json: bool,
}

/// One launch position of the step, averaged over the traced steps (µs from the step's start).
#[derive(Debug, serde::Serialize)]
struct Position {
    value: String,
    kernel: String,
    blocks: usize,
    start_us: f64,
    last_start_us: f64,
    waited_us: Option<f64>,
    landed_us: Option<f64>,
    summed_us: Option<f64>,
    end_us: f64,
    /// The median block's time from its own wait returning to its end.
    block_after_wait_us: Option<f64>,
    /// The median block's time from its own wait returning to its first reads landing.
    block_landed_after_wait_us: Option<f64>,
    /// The median block's time from its own wait returning to its sums being done.
    block_summed_after_wait_us: Option<f64>,
    /// From the previous launch's last block ending to this one's wait returning.
    after_previous_us: Option<f64>,
    median_start_us: f64,
    /// Blocks that began after the previous launch's last block ended (mean over steps).
    late_blocks: f64,
}

pub fn trace(a: TraceArgs) -> anyhow::Result<()> {
    if a.batch == 0 || a.steps == 0 || a.events == 0 {
        bail!("--batch, --steps and --events must be positive");
    }
    let dir = super::model_dir(a.model);
    let model = super::cuda::open_reference(&dir)?;
    let mut gpu = super::cuda::open_gpu(&model, a.batch, 16 * a.batch, a.steps + 1, Some(a.events))?;
    gpu.prefill_to_device(&super::cuda::short_prompt(a.batch, model.config.vocab_size as i64), a.batch)?;
    let steps = gpu.trace_decode(a.batch, a.steps).context("tracing the decode steps")?;
    let positions = average(&steps);
    if a.json {
        println!("{}", serde_json::json!({ "device": gpu.device_name(), "model": dir.display().to_string(), "batch": a.batch, "steps": a.steps, "launches": positions }));
    } else {
        print_table(&gpu.device_name(), &dir, a.batch, &positions);
    }
    if let Some(path) = &a.svg {
        let last = steps.last().context("no step traced")?;
        draw(path, &format!("{}: one decode step of {} at batch {} on {}", dir.display(), last.len(), a.batch, gpu.device_name()), last)
            .with_context(|| format!("drawing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Means over the steps after the first (all of them when only one was traced).
fn average(steps: &[Vec<LaunchSpan>]) -> Vec<Position> {
    let used = if steps.len() > 1 { &steps[1..] } else { steps };
    let n = used.len() as f64;
    let first = &used[0];
    (0..first.len())
        .map(|i| {
            let mean = |f: &dyn Fn(&Vec<LaunchSpan>) -> f64| used.iter().map(f).sum::<f64>() / n / 1e3;
            let waited = first[i].waited.map(|_| mean(&|s| s[i].waited.unwrap_or(s[i].start)));
            let landed = first[i].landed.map(|_| mean(&|s| s[i].landed.unwrap_or(s[i].start)));
            let summed = first[i].summed.map(|_| mean(&|s| s[i].summed.unwrap_or(s[i].start)));
            let block_after_wait = first[i].block_after_wait.map(|_| mean(&|s| s[i].block_after_wait.unwrap_or(0.0)));
            let block_landed_after_wait = first[i].block_landed_after_wait.map(|_| mean(&|s| s[i].block_landed_after_wait.unwrap_or(0.0)));
            let block_summed_after_wait = first[i].block_summed_after_wait.map(|_| mean(&|s| s[i].block_summed_after_wait.unwrap_or(0.0)));
            let after_previous = match (i, first[i].waited) {
                (0, _) | (_, None) => None,
                _ => Some(mean(&|s| s[i].waited.unwrap_or(s[i].start) - s[i - 1].end)),
            };
            Position {
                value: first[i].value.clone(),
                kernel: first[i].kernel.clone(),
                blocks: first[i].blocks,
                start_us: mean(&|s| s[i].start),
                last_start_us: mean(&|s| s[i].last_start),
                waited_us: waited,
                landed_us: landed,
                summed_us: summed,
                end_us: mean(&|s| s[i].end),
                block_after_wait_us: block_after_wait,
                block_landed_after_wait_us: block_landed_after_wait,
                block_summed_after_wait_us: block_summed_after_wait,
                after_previous_us: after_previous,
                median_start_us: mean(&|s| s[i].median_start),
                late_blocks: used.iter().map(|s| s[i].late_blocks as f64).sum::<f64>() / n,
            }
        })
        .collect()
}

fn print_table(device: &str, model: &Path, batch: usize, positions: &[Position]) {
    println!("{}: decode step at batch {batch} on {device}, µs (means over the traced steps after the first)", model.display());
    println!("| # | value | kernel | blocks | start | last block start | wait returned | reads landed | sums done | end | before its wait | after its wait | median block after its wait | median block wait → landed | median block wait → sums done | previous end → wait returned | median block start | blocks begun after the previous end |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let f = |x: Option<f64>| x.map_or("—".to_string(), |x| format!("{x:.2}"));
    for (i, p) in positions.iter().enumerate() {
        println!(
            "| {i} | {} | {} | {} | {:.2} | {:.2} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {:.2} | {:.1} |",
            p.value,
            p.kernel,
            p.blocks,
            p.start_us,
            p.last_start_us,
            f(p.waited_us),
            f(p.landed_us),
            f(p.summed_us),
            p.end_us,
            f(p.waited_us.map(|w| w - p.start_us)),
            f(p.waited_us.map(|w| p.end_us - w)),
            f(p.block_after_wait_us),
            f(p.block_landed_after_wait_us),
            f(p.block_summed_after_wait_us),
            f(p.after_previous_us),
            p.median_start_us,
            p.late_blocks
        );
    }
    // Per kernel family: the work after the wait and the hand-over before it, which together
    // make up the step's critical path.
    let mut families: Vec<(String, usize, f64, f64)> = Vec::new();
    for p in positions {
        let family = p.kernel.rsplit_once('_').map_or(p.kernel.as_str(), |(f, _)| f).to_string();
        let after = p.waited_us.map_or(p.end_us - p.start_us, |w| p.end_us - w);
        let handover = p.after_previous_us.unwrap_or(0.0);
        match families.iter_mut().find(|f| f.0 == family) {
            Some(f) => {
                f.1 += 1;
                f.2 += after;
                f.3 += handover;
            }
            None => families.push((family, 1, after, handover)),
        }
    }
    let step = positions.iter().map(|p| p.end_us).fold(0.0, f64::max);
    println!();
    println!("step: {step:.2} µs over {} traced launches", positions.len());
    println!("| kernel family | launches | after their wait, µs | previous end → wait returned, µs |");
    println!("|---|---|---|---|");
    for (family, n, after, handover) in families {
        println!("| {family} | {n} | {after:.2} | {handover:.2} |");
    }
}

const BEFORE_WAIT: RGBColor = RGBColor(170, 200, 235);
const AFTER_WAIT: RGBColor = RGBColor(30, 100, 200);
const LANDED: RGBColor = RGBColor(220, 60, 30);
const SUMMED: RGBColor = RGBColor(20, 20, 20);

/// One row per launch: from its first block's start to its wait returning (light), then to its
/// last block's end (dark), named at its right; a red tick where its last block's first reads had
/// landed, a black one where its sums were done.
fn draw(path: &Path, title: &str, spans: &[LaunchSpan]) -> anyhow::Result<()> {
    let rows = spans.len().max(1);
    let end = spans.iter().map(|s| s.end).fold(0.0, f64::max) / 1e3;
    let root = SVGBackend::new(path, (1400, (60 + 14 * rows).max(200) as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(30)
        .build_cartesian_2d(0f64..end.max(1e-3) * 1.12, rows as f64..0f64)?;
    chart.configure_mesh().x_desc("µs from the step's first block").y_desc("launch, in issue order").y_labels(0).draw()?;
    for (i, s) in spans.iter().enumerate() {
        let (y0, y1) = (i as f64 + 0.15, i as f64 + 0.85);
        let waited = s.waited.unwrap_or(s.start) / 1e3;
        chart.draw_series(std::iter::once(Rectangle::new([(s.start / 1e3, y0), (waited, y1)], BEFORE_WAIT.filled())))?;
        chart.draw_series(std::iter::once(Rectangle::new([(waited, y0), (s.end / 1e3, y1)], AFTER_WAIT.filled())))?;
        for (mark, color) in [(s.landed, LANDED), (s.summed, SUMMED)] {
            if let Some(at) = mark {
                let at = at / 1e3;
                chart.draw_series(std::iter::once(Rectangle::new([(at - end * 0.001, y0 - 0.1), (at + end * 0.001, y1 + 0.1)], color.filled())))?;
            }
        }
        // The launch's name just right of its bar.
        chart.draw_series(std::iter::once(Text::new(format!("{} {}", s.value, s.kernel), (s.end / 1e3 + end * 0.003, i as f64 + 0.1), ("sans-serif", 11))))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(value: &str, start: f64, waited: Option<f64>, end: f64) -> LaunchSpan {
        LaunchSpan { value: value.into(), kernel: format!("k_{value}"), blocks: 1, start, last_start: start, waited, landed: None, summed: None, block_after_wait: waited.map(|w| end - w), block_landed_after_wait: None, block_summed_after_wait: None, median_start: start, late_blocks: usize::from(start > 1500.0), end }
    }

    #[test]
    fn means_leave_out_the_first_step_and_measure_the_hand_over() {
        let step = |shift: f64| vec![span("%1", 0.0, Some(1000.0 + shift), 3000.0), span("%2", 2000.0, Some(4000.0 + shift), 6000.0)];
        let steps = [step(5000.0), step(0.0), step(200.0)];
        let p = average(&steps);
        assert_eq!(p.len(), 2);
        assert!((p[0].waited_us.unwrap() - 1.1).abs() < 1e-9);
        assert!((p[1].start_us - 2.0).abs() < 1e-9 && (p[1].end_us - 6.0).abs() < 1e-9);
        // The second launch's wait returned 1.0 / 1.2 µs after the first one ended.
        assert!((p[1].after_previous_us.unwrap() - 1.1).abs() < 1e-9);
        assert_eq!(p[0].after_previous_us, None);
        // Block counts average as counts, not as nanoseconds turned into µs (the helper gives
        // the second launch one late block in every step, the first none).
        assert!((p[1].median_start_us - 2.0).abs() < 1e-9 && (p[1].late_blocks - 1.0).abs() < 1e-9 && p[0].late_blocks == 0.0);
    }

    #[test]
    fn the_timeline_is_drawn() {
        let dir = std::env::temp_dir().join(format!("quamba-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("step.svg");
        draw(&path, "test", &[span("%1", 0.0, Some(1000.0), 3000.0), span("%2", 2000.0, None, 6000.0)]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg") && svg.contains("%2 k_%2"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
