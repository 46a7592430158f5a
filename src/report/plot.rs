//! Draws a [`Figure`] with plotters, as SVG or PNG.
//!
//! Text is rendered with DejaVu Sans embedded in the binary
//! (`assets/fonts/`, registered once through plotters' `ab_glyph` feature),
//! so PNGs never depend on system fonts or fontconfig. Colours are the
//! Okabe–Ito palette (colour-blind safe), and lines also differ by marker
//! shape. Layout: title on top, panels side by side, one shared legend in
//! its own strip at the bottom (it can never cover data); sizes are chosen
//! to stay readable when a 960 px figure is printed at paper width.
//!
//! Files are drawn under a temporary name and renamed into place.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::config::FigureFormat;
use super::figures::{Figure, Panel, PanelKind};

const FONT: &str = "sans-serif";
static DEJAVU: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Okabe & Ito (2008): blue, orange, bluish green, vermillion, sky blue,
/// reddish purple, yellow, black.
pub const OKABE_ITO: [RGBColor; 8] = [
    RGBColor(0x00, 0x72, 0xB2),
    RGBColor(0xE6, 0x9F, 0x00),
    RGBColor(0x00, 0x9E, 0x73),
    RGBColor(0xD5, 0x5E, 0x00),
    RGBColor(0x56, 0xB4, 0xE9),
    RGBColor(0xCC, 0x79, 0xA7),
    RGBColor(0xF0, 0xE4, 0x42),
    RGBColor(0x00, 0x00, 0x00),
];
const NEUTRAL: RGBColor = RGBColor(0xBB, 0xBB, 0xBB);
const GREY_TEXT: RGBColor = RGBColor(0x66, 0x66, 0x66);
/// Error bars: near-black, distinct from the axes' black.
pub const ERROR_BAR: RGBColor = RGBColor(0x33, 0x33, 0x33);

/// An axis with ticks exactly at `keys` (categories, swept values, agent
/// sizes), formatted by the caller. plotters' own `with_key_points` loses
/// the default formatter on `f64` axes, hence this wrapper.
struct Keyed<R: Ranged<ValueType = f64>> {
    inner: R,
    keys: Vec<f64>,
}

impl<R: Ranged<ValueType = f64>> Ranged for Keyed<R> {
    type ValueType = f64;
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }
    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            vec![]
        } else {
            self.keys.clone()
        }
    }
    fn axis_pixel_range(&self, limit: (i32, i32)) -> std::ops::Range<i32> {
        self.inner.axis_pixel_range(limit)
    }
}

fn keyed(range: std::ops::Range<f64>, keys: Vec<f64>) -> Keyed<plotters::coord::types::RangedCoordf64> {
    Keyed { inner: range.into(), keys }
}

/// Registers the embedded font with plotters (idempotent).
pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU).is_err() {
            tracing::warn!("the embedded font could not be loaded; figure text may be missing");
        }
    });
}

fn color(fig: &Figure, series: usize) -> RGBColor {
    // The judge's middle series is "Tie": neutral grey, not a hue.
    if fig.legend.len() == 3 && fig.legend[1] == "Tie" {
        return [OKABE_ITO[0], NEUTRAL, OKABE_ITO[1]][series];
    }
    OKABE_ITO[series % OKABE_ITO.len()]
}

macro_rules! d {
    ($e:expr) => {
        $e.map_err(|e| anyhow!("drawing failed: {e}"))?
    };
}

/// Writes `fig` to `path` in `format`.
pub fn render(fig: &Figure, path: &Path, format: FigureFormat) -> Result<()> {
    register_font();
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("out");
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("figure");
    // Unique per process and call (#22); the extension stays last: the
    // bitmap backend picks the image format from it.
    let tmp = path.with_file_name(format!(".{stem}.{}.tmp.{ext}", crate::store::unique_suffix()));
    {
        match format {
            FigureFormat::Svg => {
                let root = SVGBackend::new(&tmp, fig.size).into_drawing_area();
                draw(&root, fig)?;
                d!(root.present());
            }
            FigureFormat::Png => {
                let root = BitMapBackend::new(&tmp, fig.size).into_drawing_area();
                draw(&root, fig)?;
                d!(root.present());
            }
        }
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, fig: &Figure) -> Result<()> {
    d!(root.fill(&WHITE));
    let body = d!(root.titled(&fig.title, (FONT, 26)));
    let (_, h) = body.dim_in_pixel();
    let (plots, legend) = body.split_vertically(h.saturating_sub(48));
    draw_legend(&legend, fig)?;
    let areas = plots.split_evenly((1, fig.panels.len().max(1)));
    for (panel, area) in fig.panels.iter().zip(&areas) {
        match &panel.kind {
            PanelKind::Bars { categories, stacked: false } => bars(area, fig, panel, categories)?,
            PanelKind::Bars { categories, stacked: true } => stacked(area, fig, panel, categories)?,
            PanelKind::Lines { log_x } => lines(area, fig, panel, *log_x)?,
            PanelKind::Curves => curves(area, fig, panel)?,
        }
    }
    Ok(())
}

fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, fig: &Figure) -> Result<()> {
    let font: TextStyle = (FONT, 18).into();
    let is_lines = fig.panels.iter().any(|p| matches!(p.kind, PanelKind::Lines { .. } | PanelKind::Curves));
    let widths: Vec<u32> = fig
        .legend
        .iter()
        .map(|s| area.estimate_text_size(s, &font).map(|(w, _)| w).unwrap_or(8 * s.len() as u32))
        .collect();
    let swatch = if is_lines { 34 } else { 18 };
    let total: u32 = widths.iter().map(|w| swatch + 8 + w + 28).sum::<u32>().saturating_sub(28);
    let (w, h) = area.dim_in_pixel();
    let mut x = (w.saturating_sub(total) / 2) as i32;
    let y = (h / 2) as i32;
    for (i, (name, tw)) in fig.legend.iter().zip(&widths).enumerate() {
        let c = color(fig, i);
        if is_lines {
            d!(area.draw(&PathElement::new(vec![(x, y), (x + swatch as i32, y)], c.stroke_width(3))));
            draw_marker(area, (x + swatch as i32 / 2, y), i, c)?;
        } else {
            d!(area.draw(&Rectangle::new([(x, y - 9), (x + 18, y + 9)], c.filled())));
        }
        let style = font.clone().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
        d!(area.draw(&Text::new(name.clone(), (x + swatch as i32 + 8, y), style)));
        x += (swatch + 8 + tw + 28) as i32;
    }
    Ok(())
}

/// Marker `i`: circle, triangle, square, diamond, cycling.
fn draw_marker<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, (x, y): (i32, i32), i: usize, c: RGBColor) -> Result<()> {
    let r = 6;
    match i % 4 {
        0 => d!(area.draw(&Circle::new((x, y), r, c.filled()))),
        1 => d!(area.draw(&Polygon::new(vec![(x, y - r - 1), (x - r - 1, y + r - 1), (x + r + 1, y + r - 1)], c.filled()))),
        2 => d!(area.draw(&Rectangle::new([(x - r + 1, y - r + 1), (x + r - 1, y + r - 1)], c.filled()))),
        _ => d!(area.draw(&Polygon::new(vec![(x, y - r - 1), (x + r + 1, y), (x, y + r + 1), (x - r - 1, y)], c.filled()))),
    }
    Ok(())
}

/// A round upper bound for an axis.
fn nice_max(v: f64) -> f64 {
    if !(v > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

fn short(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A y tick with as many decimals as the axis' scale needs, the same for
/// every tick (`0.00`, `0.02`, … rather than `0`, `0.020`).
fn tick(v: f64, span: f64) -> String {
    let decimals = if span > 0.0 { (1.0 - span.log10().floor()).clamp(0.0, 4.0) as usize } else { 2 };
    format!("{v:.decimals$}")
}

fn no_data<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel) -> Result<()> {
    let (w, h) = area.dim_in_pixel();
    let grey = BLACK.mix(0.6);
    let style = TextStyle::from((FONT, 18)).color(&grey).pos(Pos::new(HPos::Center, VPos::Center));
    d!(area.draw(&Text::new(format!("{}: no data", panel.title), ((w / 2) as i32, (h / 2) as i32), style)));
    Ok(())
}

fn bars<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, fig: &Figure, panel: &Panel, cats: &[String]) -> Result<()> {
    let n = cats.len().max(1);
    // The top of a bar's error bar, or of the bar.
    let top = |s: &super::figures::Series, i: usize| s.points[i].1.map(|y| y + s.errors.get(i).copied().flatten().unwrap_or(0.0));
    let ymax = panel.series.iter().flat_map(|s| (0..s.points.len()).filter_map(move |i| top(s, i))).fold(0.0, f64::max);
    let ymax = nice_max(ymax * 1.12);
    let mut b = ChartBuilder::on(area);
    b.margin(14).x_label_area_size(56).y_label_area_size(78);
    if !panel.title.is_empty() {
        b.caption(&panel.title, (FONT, 20));
    }
    let x = keyed(-0.5..n as f64 - 0.5, (0..n).map(|i| i as f64).collect());
    let mut chart = d!(b.build_cartesian_2d(x, 0f64..ymax));
    let fmt = |v: &f64| cats.get(v.round().max(0.0) as usize).cloned().unwrap_or_default();
    d!(chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&fmt)
        .y_label_formatter(&|v| tick(*v, ymax))
        .y_desc(panel.y_label.as_str())
        .x_desc(panel.x_label.as_str())
        .label_style((FONT, 17))
        .axis_desc_style((FONT, 19))
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.12))
        .draw());
    let ns = panel.series.len().max(1) as f64;
    let bw = 0.8 / ns;
    let (pw, _) = chart.plotting_area().dim_in_pixel();
    let bar_px = pw as f64 * bw / n as f64;
    let label_font: TextStyle = (FONT, if bar_px > 46.0 { 14 } else { 12 }).into();
    for (s, series) in panel.series.iter().enumerate() {
        let c = color(fig, s);
        for (i, &(x, y)) in series.points.iter().enumerate() {
            let x0 = x - 0.4 + s as f64 * bw;
            let mid = x0 + bw / 2.0;
            match y {
                Some(y) => {
                    d!(chart.draw_series(std::iter::once(Rectangle::new([(x0 + 0.01, 0.0), (x0 + bw - 0.01, y)], c.filled()))));
                    let err = series.errors.get(i).copied().flatten();
                    if let Some(e) = err {
                        // One polyline per error bar: lower cap, whisker, upper cap.
                        let cap = bw * 0.18;
                        let (lo, hi) = ((y - e).max(0.0), y + e);
                        let path = vec![(mid - cap, lo), (mid + cap, lo), (mid, lo), (mid, hi), (mid - cap, hi), (mid + cap, hi)];
                        d!(chart.draw_series(std::iter::once(PathElement::new(path, ERROR_BAR.stroke_width(2)))));
                    }
                    if bar_px >= 30.0 {
                        let style = label_font.clone().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Bottom));
                        let at = y + err.unwrap_or(0.0) + ymax * 0.01;
                        d!(chart.draw_series(std::iter::once(Text::new(short_label(y), (mid, at), style))));
                    }
                }
                None => {
                    let style = label_font.clone().color(&GREY_TEXT).pos(Pos::new(HPos::Center, VPos::Bottom));
                    d!(chart.draw_series(std::iter::once(Text::new("n/a".to_string(), (mid, ymax * 0.01), style))));
                }
            }
        }
    }
    Ok(())
}

/// Bar labels: 3 significant digits.
fn short_label(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn stacked<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, fig: &Figure, panel: &Panel, cats: &[String]) -> Result<()> {
    let n = cats.len().max(1);
    let font: TextStyle = (FONT, 17).into();
    let label_w = cats.iter().map(|c| area.estimate_text_size(c, &font).map(|s| s.0).unwrap_or(100)).max().unwrap_or(60);
    let mut b = ChartBuilder::on(area);
    b.margin(14).margin_right(28).x_label_area_size(56).y_label_area_size(label_w + 20);
    let y = keyed(-0.5..n as f64 - 0.5, (0..n).map(|i| i as f64).collect());
    let mut chart = d!(b.build_cartesian_2d(0f64..100.0, y));
    // The first category on top.
    let row = |i: usize| (n - 1 - i) as f64;
    let fmt = |v: &f64| {
        let i = v.round() as i64;
        if i < 0 || i >= n as i64 { String::new() } else { cats.get(n - 1 - i as usize).cloned().unwrap_or_default() }
    };
    d!(chart
        .configure_mesh()
        .disable_y_mesh()
        .y_label_formatter(&fmt)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .x_desc(panel.x_label.as_str())
        .label_style((FONT, 17))
        .axis_desc_style((FONT, 19))
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.12))
        .draw());
    for i in 0..cats.len() {
        let mut left = 0.0;
        if panel.series.iter().all(|s| s.points.get(i).and_then(|p| p.1).is_none()) {
            let style = font.clone().color(&GREY_TEXT).pos(Pos::new(HPos::Left, VPos::Center));
            d!(chart.draw_series(std::iter::once(Text::new("no verdicts".to_string(), (1.0, row(i)), style))));
            continue;
        }
        for (s, series) in panel.series.iter().enumerate() {
            let Some(v) = series.points.get(i).and_then(|p| p.1) else { continue };
            let c = color(fig, s);
            let (y0, y1) = (row(i) - 0.32, row(i) + 0.32);
            d!(chart.draw_series(std::iter::once(Rectangle::new([(left, y0), (left + v, y1)], c.filled()))));
            if v >= 7.0 {
                // Dark ink on light fills (orange, grey), white on blue.
                let luma = 0.299 * c.0 as f64 + 0.587 * c.1 as f64 + 0.114 * c.2 as f64;
                let ink = if luma > 140.0 { BLACK } else { WHITE };
                let style = TextStyle::from((FONT, 16)).color(&ink).pos(Pos::new(HPos::Center, VPos::Center));
                d!(chart.draw_series(std::iter::once(Text::new(format!("{v:.0}%"), (left + v / 2.0, row(i)), style))));
            }
            left += v;
        }
    }
    Ok(())
}

fn lines<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, fig: &Figure, panel: &Panel, log_x: bool) -> Result<()> {
    let mut xs: Vec<f64> = panel.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let ys: Vec<f64> = panel.series.iter().flat_map(|s| s.points.iter().filter_map(|p| p.1)).collect();
    if xs.is_empty() || ys.is_empty() {
        return no_data(area, panel);
    }
    let (ylo, yhi) = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &y| (a.min(y), b.max(y)));
    let pad = ((yhi - ylo) * 0.15).max(yhi.abs() * 0.05).max(1e-3);
    let (ylo, yhi) = (if ylo >= 0.0 { (ylo - pad).max(0.0) } else { ylo - pad }, yhi + pad);
    let (xlo, xhi) = (xs[0], xs[xs.len() - 1]);
    let mut b = panel_builder(area, panel);
    if log_x {
        let x = Keyed { inner: LogCoord::from((xlo / 1.4..xhi * 1.4).log_scale()), keys: xs.clone() };
        let mut chart = d!(b.build_cartesian_2d(x, ylo..yhi));
        mesh_lines(&mut chart, panel, yhi - ylo, None)?;
        draw_lines(&mut chart, fig, panel)
    } else {
        let xpad = ((xhi - xlo) * 0.08).max(0.5);
        let x = keyed(xlo - xpad..xhi + xpad, xs.clone());
        let mut chart = d!(b.build_cartesian_2d(x, ylo..yhi));
        mesh_lines(&mut chart, panel, yhi - ylo, None)?;
        draw_lines(&mut chart, fig, panel)
    }
}

/// Dense curves (training steps): plotters' own ticks on both axes, thin
/// lines, markers only when a series has few points.
fn curves<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, fig: &Figure, panel: &Panel) -> Result<()> {
    let pts = || panel.series.iter().flat_map(|s| s.points.iter().filter_map(|p| p.1.map(|y| (p.0, y))));
    if pts().next().is_none() {
        return no_data(area, panel);
    }
    let (xlo, xhi) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (x, _)| (a.min(x), b.max(x)));
    let (ylo, yhi) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (_, y)| (a.min(y), b.max(y)));
    let pad = ((yhi - ylo) * 0.08).max(yhi.abs() * 0.02).max(1e-3);
    let (ylo, yhi) = (if ylo >= 0.0 { (ylo - pad).max(0.0) } else { ylo - pad }, yhi + pad);
    let xpad = ((xhi - xlo) * 0.02).max(0.5);
    let mut b = panel_builder(area, panel);
    let mut chart = d!(b.build_cartesian_2d(xlo - xpad..xhi + xpad, ylo..yhi));
    mesh_lines(&mut chart, panel, yhi - ylo, Some(6))?;
    for (s, series) in panel.series.iter().enumerate() {
        // Series are matched to the legend by name (a panel may show a
        // subset of the figure's series).
        let k = fig.legend.iter().position(|l| *l == series.name).unwrap_or(s);
        let c = color(fig, k);
        let seg: Vec<(f64, f64)> = series.points.iter().filter_map(|p| p.1.map(|y| (p.0, y))).collect();
        if seg.len() > 1 {
            d!(chart.draw_series(LineSeries::new(seg.iter().copied(), c.stroke_width(2))));
        }
        if seg.len() <= 30 {
            for &(x, y) in &seg {
                let pos = chart.backend_coord(&(x, y));
                let area = chart.plotting_area().strip_coord_spec();
                let (ox, oy) = chart.plotting_area().get_base_pixel();
                draw_marker(&area, (pos.0 - ox, pos.1 - oy), k, c)?;
            }
        }
    }
    Ok(())
}

/// A panel's chart builder: margins, label areas, its title.
fn panel_builder<'a, 'b, DB: DrawingBackend>(area: &'a DrawingArea<DB, Shift>, panel: &'b Panel) -> ChartBuilder<'a, 'b, DB> {
    let mut b = ChartBuilder::on(area);
    b.margin(14).margin_right(24).x_label_area_size(56).y_label_area_size(if panel.y_label.is_empty() { 52 } else { 78 });
    if !panel.title.is_empty() {
        b.caption(&panel.title, (FONT, 20));
    }
    b
}

/// The mesh, ticks and axis titles of a panel; `labels`: ticks per axis
/// (plotters' default when `None`).
fn mesh_lines<DB, X>(chart: &mut ChartContext<'_, DB, Cartesian2d<X, plotters::coord::types::RangedCoordf64>>, panel: &Panel, span: f64, labels: Option<usize>) -> Result<()>
where
    DB: DrawingBackend,
    X: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let mut mesh = chart.configure_mesh();
    if let Some(n) = labels {
        mesh.x_labels(n).y_labels(n);
    }
    d!(mesh
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| tick(*v, span))
        .y_desc(panel.y_label.as_str())
        .x_desc(panel.x_label.as_str())
        .label_style((FONT, 17))
        .axis_desc_style((FONT, 19))
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.12))
        .draw());
    Ok(())
}

fn draw_lines<DB, X>(chart: &mut ChartContext<'_, DB, Cartesian2d<X, plotters::coord::types::RangedCoordf64>>, fig: &Figure, panel: &Panel) -> Result<()>
where
    DB: DrawingBackend,
    X: Ranged<ValueType = f64>,
{
    for (s, series) in panel.series.iter().enumerate() {
        let c = color(fig, s);
        // A missing point breaks the line rather than bridging the gap.
        let mut segment: Vec<(f64, f64)> = Vec::new();
        let mut segments = Vec::new();
        for &(x, y) in &series.points {
            match y {
                Some(y) => segment.push((x, y)),
                None => segments.push(std::mem::take(&mut segment)),
            }
        }
        segments.push(segment);
        for seg in segments.iter().filter(|s| s.len() > 1) {
            d!(chart.draw_series(LineSeries::new(seg.iter().copied(), c.stroke_width(3))));
        }
        for &(x, y) in segments.iter().flatten() {
            let pos = chart.backend_coord(&(x, y));
            let area = chart.plotting_area().strip_coord_spec();
            let (ox, oy) = chart.plotting_area().get_base_pixel();
            draw_marker(&area, (pos.0 - ox, pos.1 - oy), s, c)?;
        }
    }
    Ok(())
}
