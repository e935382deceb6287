//! Classifying images from files.
//!
//! Preprocessing, meant to bring a photo close to a Fashion-MNIST sample
//! (a light garment on a black background, 28 x 28):
//!
//! 1. decode PNG or JPEG of any size; transparent pixels are composited onto
//!    white (a cut-out product photo has a transparent background);
//! 2. convert to 8-bit grayscale (Rec. 601 luma);
//! 3. if the background is light (mean of the border pixels above 127),
//!    invert, so the background becomes dark as in the dataset;
//! 4. scale the longest side to 28 pixels (Lanczos3), keeping the aspect
//!    ratio, and centre it on a black 28 x 28 canvas;
//! 5. normalize with the model's input normalization.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, Luma};
use serde::Serialize;

use crate::data::{CLASS_NAMES, CLASSES, Normalization, PIXELS, SIDE};
use crate::eval::softmax;
use crate::trainer::{Trainer, TrainerError};

/// Image loading failure, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct ImageError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub msg: String,
}

/// Mean of the outermost ring of pixels.
pub fn border_mean(img: &GrayImage) -> f64 {
    let (w, h) = img.dimensions();
    let mut sum = 0u64;
    let mut n = 0u64;
    for (x, y, p) in img.enumerate_pixels() {
        if x == 0 || y == 0 || x + 1 == w || y + 1 == h {
            sum += u64::from(p.0[0]);
            n += 1;
        }
    }
    if n == 0 { 0.0 } else { sum as f64 / n as f64 }
}

/// Steps 1-4 of the module docs on a decoded image: 784 bytes, dark
/// background.
pub fn preprocess(img: &DynamicImage) -> Vec<u8> {
    let rgba = img.to_rgba8();
    let mut gray = GrayImage::new(rgba.width(), rgba.height());
    for (g, p) in gray.pixels_mut().zip(rgba.pixels()) {
        let [r, gg, b, a] = p.0.map(f64::from);
        let a = a / 255.0;
        let over_white = |c: f64| c * a + 255.0 * (1.0 - a);
        let luma = 0.299 * over_white(r) + 0.587 * over_white(gg) + 0.114 * over_white(b);
        *g = Luma([luma.round().clamp(0.0, 255.0) as u8]);
    }
    if border_mean(&gray) > 127.0 {
        image::imageops::invert(&mut gray);
    }
    let (w, h) = gray.dimensions();
    let scaled = if (w, h) == (SIDE as u32, SIDE as u32) {
        gray
    } else {
        let s = SIDE as f64 / f64::from(w.max(h));
        let nw = ((f64::from(w) * s).round() as u32).clamp(1, SIDE as u32);
        let nh = ((f64::from(h) * s).round() as u32).clamp(1, SIDE as u32);
        image::imageops::resize(&gray, nw, nh, FilterType::Lanczos3)
    };
    let mut canvas = GrayImage::new(SIDE as u32, SIDE as u32);
    let (ox, oy) = (
        (SIDE as u32 - scaled.width()) / 2,
        (SIDE as u32 - scaled.height()) / 2,
    );
    image::imageops::overlay(&mut canvas, &scaled, i64::from(ox), i64::from(oy));
    canvas.into_raw()
}

/// Loads and preprocesses an image file (PNG or JPEG).
///
/// # Errors
/// Unreadable or undecodable file.
pub fn load_image(path: &Path) -> Result<Vec<u8>, ImageError> {
    let img = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| ImageError {
            path: path.to_owned(),
            msg: e.to_string(),
        })?
        .decode()
        .map_err(|e| ImageError {
            path: path.to_owned(),
            msg: format!("cannot decode as PNG or JPEG: {e}"),
        })?;
    Ok(preprocess(&img))
}

/// One class and its probability.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scored {
    /// Class index.
    pub class: usize,
    /// Class name.
    pub name: &'static str,
    /// Softmax probability.
    pub prob: f64,
}

/// A prediction for one input.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// File name or `test[N]`.
    pub input: String,
    /// Most likely class.
    pub class: usize,
    /// Its name.
    pub name: &'static str,
    /// Top three classes, most likely first.
    pub top3: Vec<Scored>,
    /// True label when known (dataset samples).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<usize>,
}

impl Prediction {
    /// One line for people.
    pub fn render(&self) -> String {
        let top: Vec<String> = self
            .top3
            .iter()
            .map(|s| format!("{} {:.1}%", s.name, 100.0 * s.prob))
            .collect();
        let truth = match self.label {
            Some(l) => format!(
                "  (true: {}{})",
                CLASS_NAMES[l],
                if l == self.class { "" } else { ", wrong" }
            ),
            None => String::new(),
        };
        format!(
            "{}: {}{truth}  [top 3: {}]",
            self.input,
            self.name,
            top.join(", ")
        )
    }
}

/// Classifies preprocessed images (`784` bytes each).
///
/// # Errors
/// The back end failed.
pub fn predict(
    trainer: &mut dyn Trainer,
    norm: Normalization,
    inputs: &[(String, Vec<u8>, Option<usize>)],
) -> Result<Vec<Prediction>, TrainerError> {
    let mut x = Vec::with_capacity(inputs.len() * PIXELS);
    for (_, px, _) in inputs {
        norm.extend(&mut x, px);
    }
    let mut logits = vec![0.0; inputs.len() * CLASSES];
    trainer.forward(&x, &mut logits)?;
    Ok(inputs
        .iter()
        .zip(logits.chunks_exact(CLASSES))
        .map(|((name, _, label), row)| {
            let p = softmax(row);
            let mut idx: Vec<usize> = (0..CLASSES).collect();
            idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            let top3: Vec<Scored> = idx[..3]
                .iter()
                .map(|&c| Scored {
                    class: c,
                    name: CLASS_NAMES[c],
                    prob: p[c],
                })
                .collect();
            Prediction {
                input: name.clone(),
                class: top3[0].class,
                name: top3[0].name,
                top3,
                label: *label,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage, Rgba, RgbaImage};

    #[test]
    fn light_background_photo_is_inverted_and_resized() {
        // 100 x 50 white photo with a black rectangle in the middle.
        let mut img = RgbImage::from_pixel(100, 50, Rgb([255, 255, 255]));
        for y in 10..40 {
            for x in 30..70 {
                img.put_pixel(x, y, Rgb([0, 0, 0]));
            }
        }
        let px = preprocess(&DynamicImage::ImageRgb8(img));
        assert_eq!(px.len(), PIXELS);
        // Longest side 100 -> 28, so 50 -> 14 rows, centred: rows 7..21.
        assert_eq!(px[0], 0, "padding is black");
        assert!(px[14 * SIDE + 14] > 200, "the dark garment became light");
        assert!(px[8 * SIDE + 2] < 30, "the white background became dark");
    }

    #[test]
    fn dark_28x28_passes_through_and_alpha_is_background() {
        let mut img = GrayImage::new(28, 28);
        img.put_pixel(5, 6, Luma([200]));
        let px = preprocess(&DynamicImage::ImageLuma8(img));
        assert_eq!(px[6 * SIDE + 5], 200);
        assert_eq!(px.iter().filter(|&&p| p != 0).count(), 1);

        // Transparent background with an opaque black shape: background is
        // treated as white, so the result is inverted.
        let mut rgba = RgbaImage::from_pixel(28, 28, Rgba([0, 0, 0, 0]));
        rgba.put_pixel(10, 10, Rgba([0, 0, 0, 255]));
        let px = preprocess(&DynamicImage::ImageRgba8(rgba));
        assert_eq!(px[10 * SIDE + 10], 255);
        assert_eq!(px[0], 0);
    }

    #[test]
    fn load_image_reads_png_and_jpeg_and_names_bad_files() {
        let d = tempfile::tempdir().unwrap();
        let img = RgbImage::from_pixel(40, 40, Rgb([250, 250, 250]));
        for ext in ["png", "jpg"] {
            let p = d.path().join(format!("x.{ext}"));
            img.save(&p).unwrap();
            let px = load_image(&p).unwrap();
            assert!(
                px.iter().all(|&v| v < 20),
                "{ext}: uniform light image becomes dark"
            );
        }
        let bad = d.path().join("bad.png");
        std::fs::write(&bad, b"not an image").unwrap();
        let e = load_image(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.png"), "{e}");
    }
}
