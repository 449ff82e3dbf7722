//! Messages per second by workload and system: grouped bars on a log scale.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::common::thousands;
use crate::report::Run;

const WIDTH: i32 = 1300;

const COLORS: [RGBColor; 11] = [
    RGBColor(214, 39, 40),   // durq
    RGBColor(31, 119, 180),  // SQLite, txn/msg
    RGBColor(120, 170, 220), // SQLite, batched
    RGBColor(140, 86, 75),   // yaque
    RGBColor(148, 103, 189), // queue-file
    RGBColor(44, 160, 44),   // fjall
    RGBColor(188, 189, 34),  // okaywal
    RGBColor(227, 119, 194), // LMDB
    RGBColor(127, 127, 127), // naive log
    RGBColor(255, 127, 14),  // Redis Streams
    RGBColor(23, 190, 207),
];

pub fn svg(run: &Run<'_>, path: &Path) -> crate::common::Result<()> {
    let workloads = run.workloads;
    let systems = &run.systems;
    let rates: Vec<Vec<Option<f64>>> =
        workloads.iter().map(|w| systems.iter().map(|s| run.results.rate(w.id, s)).collect()).collect();
    let all: Vec<f64> = rates.iter().flatten().flatten().copied().filter(|r| *r > 0.0).collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).max(1.0);
    let hi = all.iter().copied().fold(1.0, f64::max);
    let (ymin, ymax) = (10f64.powf(lo.log10().floor()), 10f64.powf(hi.log10().ceil()));

    let root = SVGBackend::new(path, (WIDTH as u32, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("durq beside its peers: messages per second (log scale, higher is better)", ("sans-serif", 22))
        .margin(16)
        .margin_right(220)
        .x_label_area_size(56)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..workloads.len() as f64, (ymin..ymax).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("messages/s")
        .y_label_formatter(&|v| thousands(*v))
        .draw()?;

    let n = systems.len() as f64;
    let width = 0.8 / n;
    for (si, s) in systems.iter().enumerate() {
        let color = COLORS[si % COLORS.len()];
        let bars = rates.iter().enumerate().filter_map(|(wi, row)| {
            let r = row[si]?;
            let x0 = wi as f64 + 0.1 + si as f64 * width;
            Some(Rectangle::new([(x0, ymin), (x0 + width * 0.9, r)], color.filled()))
        });
        chart.draw_series(bars)?;
        // The legend, in the right margin so it never covers a bar.
        let y = 70 + 24 * si as i32;
        root.draw(&Rectangle::new([(WIDTH - 200, y), (WIDTH - 186, y + 14)], color.filled()))?;
        root.draw_text(s, &TextStyle::from(("sans-serif", 15).into_font()), (WIDTH - 178, y))?;
    }

    for (wi, w) in workloads.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(wi as f64 + 0.5, ymin));
        let style = TextStyle::from(("sans-serif", 15).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        root.draw_text(w.id, &style, (x, y + 8))?;
        let short = match w.kind {
            crate::common::Kind::SyncAtEnd => format!("{} B, sync at end", w.payload),
            crate::common::Kind::EachDurable => "each durable".into(),
            crate::common::Kind::Batches(b) => format!("batches of {b}"),
            crate::common::Kind::Consume { batch } => format!("consume, commit {}", crate::common::per_commit(batch)),
            crate::common::Kind::Concurrent { threads } => format!("{threads} producers"),
        };
        let small = TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        root.draw_text(&short, &small, (x, y + 26))?;
    }
    let foot = TextStyle::from(("sans-serif", 13).into_font());
    root.draw_text(
        "No bar: the system cannot do that workload honestly. Medians; capped cells are marked in the table in BENCHMARKS.md.",
        &foot,
        (100, 596),
    )?;
    root.present()?;
    Ok(())
}
