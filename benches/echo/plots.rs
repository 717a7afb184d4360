//! SVG plots for docs/img/ (plotters, SVG backend only: the text is left to
//! the viewer's fonts, so nothing here needs a font file).

use std::error::Error;
use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::report::{long_workers, num, stat, Report, Sample};

/// The files written, with what each shows.
pub const FILES: &[(&str, &str)] = &[
    (
        "throughput.svg",
        "Echoed messages per second by server and scenario",
    ),
    ("p99.svg", "p99 latency by server and scenario"),
    ("cpu.svg", "Server CPU seconds per million messages"),
    (
        "memory.svg",
        "9000 idle connections: peak RSS and RSS per connection",
    ),
    (
        "longwork.svg",
        "Long work: time to serve 200 clients that each need 50 ms",
    ),
];

struct Bar {
    label: String,
    med: f64,
    min: f64,
    max: f64,
    color: RGBColor,
    /// A tick drawn across the bar (long work: the ideal time).
    mark: Option<f64>,
}

struct Panel {
    title: String,
    bars: Vec<Bar>,
}

/// The kinds of server a bar's colour tells apart, in legend order.
const KINDS: [(&str, RGBColor); 5] = [
    ("sockloop reactor", RGBColor(31, 119, 180)),
    ("sockloop socketserver", RGBColor(120, 170, 215)),
    ("tokio", RGBColor(230, 120, 20)),
    ("Python socketserver", RGBColor(60, 150, 60)),
    ("std threads, raw mio", RGBColor(130, 130, 130)),
];

fn kind(key: &str) -> usize {
    match key {
        k if k.starts_with("select_echo") || k.starts_with("offload") => 0,
        k if k.starts_with("sl_") || k == "thread_server" || k == "fork_server" => 1,
        k if k.starts_with("tokio") => 2,
        k if k.starts_with("py_") => 3,
        _ => 4,
    }
}

fn color(key: &str) -> RGBColor {
    KINDS[kind(key)].1
}

/// Height of the legend strip under the panels.
const LEGEND_H: u32 = 30;

/// The legend: a swatch per kind of server shown, then the whisker and the
/// tick when some bar has one, on one line under the panels.
fn legend(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    panels: &[Panel],
) -> Result<(), Box<dyn Error>> {
    let bars = || panels.iter().flat_map(|p| &p.bars);
    let font = ("sans-serif", 12).into_font().color(&BLACK);
    let (mut x, y) = (12, 8);
    for (i, (name, color)) in KINDS.iter().enumerate() {
        if !bars().any(|b| kind(&b.label) == i) {
            continue;
        }
        area.draw(&Rectangle::new([(x, y), (x + 12, y + 12)], color.filled()))?;
        area.draw(&Text::new(name.to_string(), (x + 16, y), font.clone()))?;
        // About 6 px a character at this size: room for every item in the narrowest figure.
        x += 16 + 6 * name.len() as i32 + 14;
    }
    if bars().any(|b| b.max > b.min) {
        let mid = y + 6;
        area.draw(&PathElement::new(
            vec![(x, mid), (x + 18, mid)],
            BLACK.stroke_width(1),
        ))?;
        let text = "min–max of the rounds";
        area.draw(&Text::new(text, (x + 22, y), font.clone()))?;
        x += 22 + 6 * text.chars().count() as i32 + 14;
    }
    if bars().any(|b| b.mark.is_some()) {
        area.draw(&PathElement::new(
            vec![(x + 6, y), (x + 6, y + 12)],
            BLACK.stroke_width(2),
        ))?;
        area.draw(&Text::new("ideal", (x + 14, y), font))?;
    }
    Ok(())
}

fn panels_marked(
    r: &Report<'_>,
    sc: &str,
    title: &str,
    f: impl Fn(&Sample) -> f64 + Copy,
    mark: impl Fn(&str) -> Option<f64>,
) -> Vec<Panel> {
    let mut v = panels(r, &[sc], |_| title.to_string(), f);
    for p in &mut v {
        for b in &mut p.bars {
            b.mark = mark(&b.label);
        }
    }
    v
}

fn panels(
    r: &Report<'_>,
    scenarios: &[&str],
    title: impl Fn(&str) -> String,
    f: impl Fn(&Sample) -> f64 + Copy,
) -> Vec<Panel> {
    let mut out = Vec::new();
    for &sc in scenarios {
        let mut bars = Vec::new();
        for s in r.servers {
            let Some(samples) = r.samples(sc, s.key) else {
                continue;
            };
            let st = stat(samples, f);
            if st.med.is_finite() {
                bars.push(Bar {
                    label: s.key.to_string(),
                    med: st.med,
                    min: st.min,
                    max: st.max,
                    color: color(s.key),
                    mark: None,
                });
            }
        }
        if !bars.is_empty() {
            out.push(Panel {
                title: title(sc),
                bars,
            });
        }
    }
    out
}

fn draw(path: &Path, title: &str, panels: &[Panel]) -> Result<(), Box<dyn Error>> {
    if panels.is_empty() {
        return Ok(());
    }
    let cols = if panels.len() == 1 { 1 } else { 2 };
    let rows = panels.len().div_ceil(cols);
    let tallest = panels.iter().map(|p| p.bars.len()).max().unwrap_or(1);
    let panel_h = 70 + 26 * tallest as u32;
    let height = 50 + panel_h * rows as u32 + LEGEND_H;
    let root = SVGBackend::new(path, (560 * cols as u32, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (root, key) = root.split_vertically(height - LEGEND_H);
    legend(&key, panels)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let areas = root.split_evenly((rows, cols));
    for (area, p) in areas.iter().zip(panels) {
        let n = p.bars.len() as i32;
        let top = p
            .bars
            .iter()
            .map(|b| b.max.max(b.med).max(b.mark.unwrap_or(0.0)))
            .fold(0.0, f64::max)
            * 1.22;
        // The first server on top: bar i sits in row n - 1 - i.
        let row = |i: usize| n - 1 - i as i32;
        let labels: Vec<String> = p.bars.iter().rev().map(|b| b.label.clone()).collect();
        let mut chart = ChartBuilder::on(area)
            .caption(&p.title, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(110)
            .build_cartesian_2d(0.0..top.max(1e-9), (0..n - 1).into_segmented())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n as usize)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) if *i >= 0 && *i < n => labels[*i as usize].clone(),
                _ => String::new(),
            })
            .x_labels(5)
            .x_label_formatter(&|x| num(*x))
            .label_style(("sans-serif", 12))
            .draw()?;
        chart.draw_series(p.bars.iter().enumerate().map(|(i, b)| {
            let i = row(i);
            let mut r = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (b.med, SegmentValue::Exact(i + 1)),
                ],
                b.color.filled(),
            );
            r.set_margin(4, 4, 0, 0);
            r
        }))?;
        chart.draw_series(
            p.bars
                .iter()
                .enumerate()
                .filter(|(_, b)| b.max > b.min)
                .map(|(i, b)| {
                    let y = SegmentValue::CenterOf(row(i));
                    PathElement::new(vec![(b.min, y.clone()), (b.max, y)], BLACK.stroke_width(1))
                }),
        )?;
        chart.draw_series(p.bars.iter().enumerate().map(|(i, b)| {
            let at = (b.max.max(b.med), SegmentValue::CenterOf(row(i)));
            EmptyElement::at(at)
                + Text::new(
                    num(b.med),
                    (4, -6),
                    ("sans-serif", 11).into_font().color(&BLACK),
                )
        }))?;
        chart.draw_series(p.bars.iter().enumerate().filter_map(|(i, b)| {
            let x = b.mark?;
            let (lo, hi) = (SegmentValue::Exact(row(i)), SegmentValue::Exact(row(i) + 1));
            Some(PathElement::new(
                vec![(x, lo), (x, hi)],
                BLACK.stroke_width(2),
            ))
        }))?;
    }
    root.present()?;
    Ok(())
}

/// Writes every plot into `dir`.
pub fn write_all(r: &Report<'_>, dir: &Path) -> Result<(), Box<dyn Error>> {
    std::fs::create_dir_all(dir)?;
    let load = ["pingpong", "pipelined", "bulk", "conn1000"];
    let mut lat = load.to_vec();
    lat.push("idle9000");
    draw(
        &dir.join(FILES[0].0),
        "Echoed messages per second (median; whiskers: min–max)",
        &panels(r, &load, |s| s.to_string(), |s| s.msgs_s),
    )?;
    draw(
        &dir.join(FILES[1].0),
        "p99 latency, µs (median; whiskers: min–max)",
        &panels(r, &lat, |s| s.to_string(), |s| s.p99),
    )?;
    draw(
        &dir.join(FILES[2].0),
        "Server CPU seconds per million messages (lower is better)",
        &panels(r, &lat, |s| s.to_string(), |s| s.cpu_per_m),
    )?;
    let mut mem = panels(
        r,
        &["idle9000"],
        |_| "peak RSS of the server, MiB".into(),
        |s| s.hwm_mib,
    );
    mem.extend(panels(
        r,
        &["idle9000"],
        |_| "RSS per connection, KiB".into(),
        |s| s.per_conn_kib,
    ));
    draw(
        &dir.join(FILES[3].0),
        "9000 idle connections: server memory",
        &mem,
    )?;
    draw(
        &dir.join(FILES[4].0),
        "Long work: seconds to serve 200 clients × 50 ms",
        &panels_marked(
            r,
            "longwork",
            "makespan, s (black tick: clients × work / served at once)",
            |s| s.makespan,
            |key| Some(200.0 * crate::servers::LONG_WORK.as_secs_f64() / long_workers(key) as f64),
        ),
    )?;
    Ok(())
}
