//! PNG plots: training curves (train vs test) and the confusion matrix.
//!
//! Drawn with `plotters` into an RGB buffer and encoded with `image`, so no
//! system library is needed. Text uses a TrueType font found at run time
//! (`$LENET_FONT`, else DejaVu Sans from the Debian package
//! `fonts-dejavu-core`); without one (or with `LENET_FONT=none`) the plots
//! are drawn without text.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::data::{CLASS_NAMES, CLASSES};
use crate::fsutil::write_atomic;

/// Environment variable naming a `.ttf` file for plot text.
pub const FONT_ENV: &str = "LENET_FONT";
const FONT_CANDIDATES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];
const FAMILY: &str = "sans-serif";

/// Plot failure.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct PlotError {
    /// The PNG being written.
    pub path: PathBuf,
    /// What failed.
    pub msg: String,
}

/// Registers a font once; returns whether text can be drawn.
pub fn font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let env = std::env::var_os(FONT_ENV).map(PathBuf::from);
        if env.as_deref() == Some(Path::new("none")) {
            return false;
        }
        let candidates = env
            .into_iter()
            .chain(FONT_CANDIDATES.iter().map(PathBuf::from));
        for p in candidates {
            // A font file is a few MB; a larger one (or /dev/zero) is not one.
            if let Ok(bytes) = crate::fsutil::read_capped(&p, 64 << 20) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// One line of a curve plot.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// `(x, y)` points.
    pub points: Vec<(f64, f64)>,
}

fn encode_png(path: &Path, buf: Vec<u8>, w: u32, h: u32) -> Result<(), PlotError> {
    let err = |msg: String| PlotError {
        path: path.to_owned(),
        msg,
    };
    let img = image::RgbImage::from_raw(w, h, buf).ok_or_else(|| err("buffer size".into()))?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| err(e.to_string()))?;
    write_atomic(path, &png).map_err(|e| err(e.to_string()))
}

/// Line plot of `series` against epochs, written to `path` (PNG).
///
/// # Errors
/// Drawing or writing failed.
pub fn plot_curves(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), PlotError> {
    let (w, h) = (800u32, 500u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    let text = font_available();
    let err = |e: String| PlotError {
        path: path.to_owned(),
        msg: e,
    };
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let pts = series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts.filter(|(x, y)| x.is_finite() && y.is_finite()) {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if x1 - x0 < 1e-9 {
            x1 = x0 + 1.0;
        }
        let pad = ((y1 - y0) * 0.05).max(1e-3);
        let mut b = ChartBuilder::on(&root);
        b.margin(15);
        if text {
            b.caption(title, (FAMILY, 24))
                .x_label_area_size(40)
                .y_label_area_size(60);
        }
        let mut chart = b
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(|e| err(e.to_string()))?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc("epoch")
                .y_desc(y_label)
                .label_style((FAMILY, 14));
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|e| err(e.to_string()))?;
        let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
        for (i, s) in series.iter().enumerate() {
            let c = colors[i % colors.len()];
            let line = chart
                .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?;
            if text {
                line.label(s.name.clone()).legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2))
                });
            }
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(|e| err(e.to_string()))?;
        }
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font((FAMILY, 14))
                .draw()
                .map_err(|e| err(e.to_string()))?;
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    encode_png(path, buf, w, h)
}

fn centered(size: u32, color: RGBColor, h: HPos) -> TextStyle<'static> {
    TextStyle {
        font: (FAMILY, size).into_font(),
        color: color.to_backend_color(),
        pos: Pos::new(h, VPos::Center),
    }
}

/// Confusion-matrix heat map (rows: true class, columns: predicted),
/// cells shaded by row-normalized frequency and labelled with counts.
///
/// # Errors
/// Drawing or writing failed.
pub fn plot_confusion(
    path: &Path,
    title: &str,
    m: &[[u64; CLASSES]; CLASSES],
) -> Result<(), PlotError> {
    let (w, h) = (900u32, 820u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    let text = font_available();
    let err = |e: String| PlotError {
        path: path.to_owned(),
        msg: e,
    };
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut b = ChartBuilder::on(&root);
        b.margin(15);
        if text {
            b.caption(title, (FAMILY, 24))
                .x_label_area_size(90)
                .y_label_area_size(110);
        }
        let n = CLASSES as i32;
        let mut chart = b
            .build_cartesian_2d(0..n, 0..n)
            .map_err(|e| err(e.to_string()))?;
        let mut mesh = chart.configure_mesh();
        let blank = |_: &i32| String::new();
        mesh.disable_mesh();
        if text {
            // Class names are drawn at the cell centres below.
            mesh.x_label_formatter(&blank).y_label_formatter(&blank);
        } else {
            mesh.disable_axes();
        }
        if text {
            mesh.x_desc("predicted")
                .y_desc("true")
                .axis_desc_style((FAMILY, 15));
        }
        mesh.draw().map_err(|e| err(e.to_string()))?;
        // Cell (row r = true class, column c = predicted) spans x c..c+1 and
        // y n-1-r..n-r, so class 0 is the top row.
        let shade = |r: usize, c: usize| {
            let total = m[r].iter().sum::<u64>().max(1) as f64;
            m[r][c] as f64 / total
        };
        for r in 0..CLASSES {
            for c in 0..CLASSES {
                let s = (255.0 * (1.0 - shade(r, c))) as u8;
                let color = if r == c {
                    RGBColor(s, s, 255)
                } else {
                    RGBColor(255, s, s)
                };
                let (x, y) = (c as i32, n - 1 - r as i32);
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x, y), (x + 1, y + 1)],
                        color.filled(),
                    )))
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        if text {
            for (r, row) in m.iter().enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    if v == 0 {
                        continue;
                    }
                    let (x, y) = (c as i32, n - 1 - r as i32);
                    let (px, py) = chart.backend_coord(&(x, y + 1));
                    let (qx, qy) = chart.backend_coord(&(x + 1, y));
                    let fg = if shade(r, c) > 0.5 { WHITE } else { BLACK };
                    root.draw_text(
                        &m[r][c].to_string(),
                        &centered(14, fg, HPos::Center),
                        ((px + qx) / 2, (py + qy) / 2),
                    )
                    .map_err(|e| err(e.to_string()))?;
                }
            }
        }
        if text {
            let (left, bottom) = chart.backend_coord(&(0, 0));
            for (k, name) in CLASS_NAMES.iter().enumerate() {
                let k = k as i32;
                let x = (chart.backend_coord(&(k, 0)).0 + chart.backend_coord(&(k + 1, 0)).0) / 2;
                // Column names under the matrix, on alternating lines so long names do not touch.
                let y = bottom + 12 + 14 * (k % 2);
                root.draw_text(name, &centered(12, BLACK, HPos::Center), (x, y))
                    .map_err(|e| err(e.to_string()))?;
                let y = (chart.backend_coord(&(0, n - 1 - k)).1
                    + chart.backend_coord(&(0, n - k)).1)
                    / 2;
                root.draw_text(name, &centered(12, BLACK, HPos::Right), (left - 6, y))
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    encode_png(path, buf, w, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_decodable_pngs() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("loss.png");
        let s = vec![
            Series {
                name: "train".into(),
                points: vec![(1.0, 2.0), (2.0, 1.0), (3.0, 0.5)],
            },
            Series {
                name: "test".into(),
                points: vec![(1.0, 2.2), (2.0, 1.3), (3.0, f64::NAN)],
            },
        ];
        plot_curves(&p, "loss", "cross-entropy", &s).unwrap();
        let img = image::open(&p).unwrap();
        assert_eq!((img.width(), img.height()), (800, 500));
        // Something besides the white background was drawn.
        assert!(img.to_rgb8().pixels().any(|px| px.0 != [255, 255, 255]));

        let mut m = [[0u64; CLASSES]; CLASSES];
        for (i, row) in m.iter_mut().enumerate() {
            row[i] = 90;
            row[(i + 1) % CLASSES] = 10;
        }
        let p = d.path().join("confusion.png");
        plot_confusion(&p, "confusion", &m).unwrap();
        assert_eq!(image::open(&p).unwrap().width(), 900);
        // A single point must not break the axis range.
        let one = [Series {
            name: "a".into(),
            points: vec![(1.0, 0.5)],
        }];
        plot_curves(&d.path().join("one.png"), "t", "y", &one).unwrap();
    }
}
