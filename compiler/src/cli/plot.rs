//! `quambac inspect --plot DIR`: draws a [`Diagnosis`] as SVG files (plotters' SVG backend
//! writes text as `<text>` elements, so no font files or image libraries are needed).

use std::path::{Path, PathBuf};

use anyhow::Context;
use compiler::diagnose::{ChannelRanges, Diagnosis, LayerError, LayerRanges};
use plotters::prelude::*;

const BEFORE: RGBColor = RGBColor(200, 60, 40);
const AFTER: RGBColor = RGBColor(30, 100, 200);
const INT8_RANGE: RGBColor = RGBColor(20, 20, 20);

/// Writes every picture into `dir` (created if needed) and returns their paths.
pub fn write_plots(diagnosis: &Diagnosis, model_name: &str, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let layers = shown_layers(&diagnosis.ranges);
    let title = |what: &str| format!("{model_name}: per-channel max |{what}| over {} calibration windows", diagnosis.windows);
    let ssm = dir.join("ssm_input_ranges.svg");
    draw_ranges(&ssm, &title("SSM input x"), &layers, |r| &r.ssm_input).with_context(|| format!("drawing {}", ssm.display()))?;
    let out_proj = dir.join("out_proj_input_ranges.svg");
    draw_ranges(&out_proj, &title("out_proj input"), &layers, |r| &r.out_proj_input)
        .with_context(|| format!("drawing {}", out_proj.display()))?;
    let mut written = vec![ssm, out_proj];
    let path = dir.join("layer_error.svg");
    draw_errors(&path, diagnosis, model_name).with_context(|| format!("drawing {}", path.display()))?;
    written.push(path);
    Ok(written)
}

/// At most four layers, spread from the first to the last.
fn shown_layers(ranges: &[LayerRanges]) -> Vec<&LayerRanges> {
    let n = ranges.len();
    if n <= 4 {
        return ranges.iter().collect();
    }
    let mut picks: Vec<usize> = (0..4).map(|i| i * (n - 1) / 3).collect();
    picks.dedup();
    picks.into_iter().map(|i| &ranges[i]).collect()
}

type DrawResult = anyhow::Result<()>;

/// One row per layer: before (left) and after (right) on the same y scale, each with the int8
/// range its recipe gives every channel (black): the closer the range hugs the data, the finer the
/// 8-bit step; where it lies below the data, values are clipped.
fn draw_ranges(path: &Path, title: &str, layers: &[&LayerRanges], pick: impl Fn(&LayerRanges) -> &ChannelRanges) -> DrawResult {
    let root = SVGBackend::new(path, (1200, 80 + 260 * layers.len() as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let body = root.titled(title, ("sans-serif", 22))?;
    let rows = body.split_evenly((layers.len(), 2));
    for (row, layer) in layers.iter().enumerate() {
        let ranges = pick(layer);
        let panels = [
            (&ranges.before, &ranges.int8_range_naive, "float model", "naive", BEFORE),
            (&ranges.after, &ranges.int8_range_quamba2, "after the passes", "Quamba2", AFTER),
        ];
        let highest = panels.iter().flat_map(|(values, range, ..)| values.iter().chain(range.iter().flatten())).copied().fold(0.0f32, f32::max);
        let y_max = highest.max(1e-6) * 1.05;
        for (col, (values, range, label, recipe, color)) in panels.into_iter().enumerate() {
            let max = values.iter().copied().fold(0.0f32, f32::max);
            let mean = values.iter().sum::<f32>() / values.len().max(1) as f32;
            let mut caption = format!("layer {} {label}: max {max:.2}, max/mean {:.1}", layer.layer, max / mean.max(1e-12));
            if let Some(r) = range {
                let widest = r.iter().copied().fold(0.0f32, f32::max);
                caption += &format!("; black: {recipe} int8 range (≤ {widest:.2})");
            }
            let mut chart = ChartBuilder::on(&rows[row * 2 + col])
                .caption(caption, ("sans-serif", 14))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(55)
                .build_cartesian_2d(0..values.len().max(1), 0f32..y_max)?;
            chart.configure_mesh().x_desc("channel").y_desc("max |x|").light_line_style(WHITE.mix(0.0)).draw()?;
            chart.draw_series(LineSeries::new(values.iter().enumerate().map(|(c, v)| (c, *v)), color.stroke_width(1)))?;
            if let Some(r) = range {
                chart.draw_series(LineSeries::new(r.iter().enumerate().map(|(c, v)| (c, *v)), INT8_RANGE.stroke_width(2)))?;
            }
        }
    }
    root.present()?;
    Ok(())
}

/// Relative output error per layer, log scale, Quamba2 against naive quantization.
fn draw_errors(path: &Path, diagnosis: &Diagnosis, model_name: &str) -> DrawResult {
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let all = diagnosis.errors.iter().flat_map(|e| [e.quamba2, e.naive]).filter(|e| *e > 0.0);
    let (lo, hi) = all.fold((f64::INFINITY, 0.0f64), |(lo, hi), e| (lo.min(e), hi.max(e)));
    let (lo, hi) = if lo.is_finite() { (lo / 2.0, hi * 2.0) } else { (1e-6, 1.0) };
    let n = diagnosis.errors.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{model_name}: relative error of each layer's output, {}", diagnosis.target), ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        // log10 on a linear axis: plotters' log axis labels only the top decade of a narrow range.
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), lo.log10()..hi.log10())?;
    chart
        .configure_mesh()
        .x_desc("layer")
        .y_desc("‖q − f‖² / ‖f‖²")
        .x_labels(n.min(24))
        .y_labels(12)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{:.1e}", 10f64.powf(*y)))
        .draw()?;
    type Pick = fn(&LayerError) -> f64;
    let series: [(&str, RGBColor, Pick); 2] = [("naive (per-tensor min-max, RTN)", BEFORE, |e| e.naive), ("Quamba2", AFTER, |e| e.quamba2)];
    for (label, color, value) in series {
        let points: Vec<(f64, f64)> = diagnosis.errors.iter().map(|e| (e.layer as f64, value(e).max(lo).log10())).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
    }
    chart.configure_series_labels().position(SeriesLabelPosition::UpperLeft).background_style(WHITE.mix(0.9)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
