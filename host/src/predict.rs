//! Classifying images from files.
//!
//! Preprocessing, meant to bring a photo close to a Fashion-MNIST sample
//! (a light garment on a black background, 28 x 28):
//!
//! 1. decode PNG or JPEG of any size; transparent pixels are composited onto
//!    white (a cut-out product photo has a transparent background);
//! 2. estimate the background from the border: the median colour of the
//!    outermost ring of pixels, per channel, and how much the ring strays
//!    from it (noise);
//! 3. mark as content every pixel whose colour differs from the background
//!    by more than 5 % of the range (or twice the border's noise, the 95th
//!    percentile of its differences short of a garment touching the
//!    border, on a noisy background), and open that mask
//!    with a 3 x 3 square, so specks, dust and isolated noise do not count;
//! 4. convert to 8-bit grayscale the way Fashion-MNIST's conversion did
//!    (Rec. 601 luminance), as the difference from the background's
//!    luminance, less the border's noise, stretched over what the
//!    background leaves of the range; a garment darker than its background
//!    (on average over the content) is inverted, so the garment is always
//!    light on black; then trim to the content's rectangle ("trimming any
//!    edges that are close to the colour of the corner pixels", as
//!    Fashion-MNIST did); a 28 x 28 image is taken as a dataset sample and
//!    not trimmed;
//! 5. scale the longest side to 28 pixels (Lanczos3), keeping the aspect
//!    ratio, and centre it on a black 28 x 28 canvas;
//! 6. normalize with the model's input normalization.
//!
//! Without the trimming a product photo's margin shrinks the garment and moves it
//! off-centre, far from what the network was trained on.
//!
//! Decoding is bounded: files over [`MAX_IMAGE_FILE`] bytes, images wider or
//! taller than [`MAX_IMAGE_SIDE`] pixels, or needing more than
//! [`MAX_IMAGE_ALLOC`] bytes are refused before they are decoded.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage};
use serde::Serialize;

use crate::backend::{Trainer, TrainerError};
use crate::data::{CLASS_NAMES, CLASSES, Normalization, PIXELS, SIDE};
use crate::eval::softmax;

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

/// Largest image file read by [`load_image`].
pub const MAX_IMAGE_FILE: u64 = 64 << 20;
/// Largest width or height decoded.
pub const MAX_IMAGE_SIDE: u32 = 8192;
/// Largest allocation of the decoder.
pub const MAX_IMAGE_ALLOC: u64 = 256 << 20;

/// Smallest colour difference from the background that counts as content
/// when trimming: 5 % of 255 (more on a noisy background, see
/// [`Background`]).
pub const TRIM_FUZZ: u8 = 13;

/// What the border of a photo says about its background: the colour (the
/// median of the outermost ring of pixels, per channel), how far the
/// border's pixels stray from it (noise), and whether the garment is
/// darker than it (then the image is inverted).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Background {
    /// Median colour of the border, RGB.
    pub rgb: [f32; 3],
    /// Its luminance (Rec. 601).
    pub luma: f32,
    /// Colour difference (largest over the channels) above which a pixel
    /// is content: [`TRIM_FUZZ`] (5 % of the contrast when the content's
    /// contrast is lower), or twice the border's noise ([`noise_level`])
    /// when that is larger.
    pub threshold: f32,
    /// The border's luminance noise ([`noise_level`]): subtracted from
    /// every pixel, so that background noise becomes black.
    pub noise: f32,
}

/// Rec. 601 luminance, as Fashion-MNIST's conversion to 8-bit gray.
fn luma(p: [f32; 3]) -> f32 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

fn color_diff(a: [f32; 3], b: [f32; 3]) -> f32 {
    (0..3).map(|c| (a[c] - b[c]).abs()).fold(0.0, f32::max)
}

/// The `q`-quantile of `v` (sorted in place); 0 for none.
fn quantile(v: &mut [f32], q: f64) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable_by(f32::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// The 95th percentile of the border's differences `d` from the
/// background, leaving out those beyond three times their median (or
/// [`TRIM_FUZZ`]): those are a garment touching the border, not noise.
fn noise_level(mut d: Vec<f32>) -> f32 {
    let cap = (3.0 * quantile(&mut d, 0.5)).max(f32::from(TRIM_FUZZ));
    let mut near: Vec<f32> = d.into_iter().filter(|&v| v <= cap).collect();
    quantile(&mut near, 0.95)
}

/// The outermost ring of pixels of a `w x h` image, row-major `rgb`.
fn border(rgb: &[[f32; 3]], w: usize, h: usize) -> Vec<[f32; 3]> {
    (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .filter(|&(x, y)| x == 0 || y == 0 || x + 1 == w || y + 1 == h)
        .map(|(x, y)| rgb[y * w + x])
        .collect()
}

impl Background {
    /// The background of a `w x h` image (row-major RGB, 0..=255).
    pub fn estimate(rgb: &[[f32; 3]], w: usize, h: usize) -> Background {
        let ring = border(rgb, w, h);
        let mut c = [0.0f32; 3];
        for (k, ck) in c.iter_mut().enumerate() {
            let mut v: Vec<f32> = ring.iter().map(|p| p[k]).collect();
            *ck = quantile(&mut v, 0.5);
        }
        let spread = noise_level(ring.iter().map(|&p| color_diff(p, c)).collect());
        let noise = noise_level(ring.iter().map(|&p| (luma(p) - luma(c)).abs()).collect());
        // The content's contrast: the 99.5th percentile of every pixel's
        // difference (a histogram: images may hold millions of pixels).
        let mut hist = [0usize; 256];
        for &p in rgb {
            hist[color_diff(p, c).round().min(255.0) as usize] += 1;
        }
        let mut above = 0;
        let skip = rgb.len() / 200;
        let contrast = (0..256)
            .rev()
            .find(|&v| {
                above += hist[v];
                above > skip
            })
            .unwrap_or(0) as f32;
        // 5 % of the range, or of the content's contrast when that is less
        // (a light garment on mid grey), but above the border's noise.
        let fuzz = f32::from(TRIM_FUZZ).min(contrast * 0.05);
        Background {
            rgb: c,
            luma: luma(c),
            threshold: fuzz.max(2.0 * spread).clamp(2.0, 128.0),
            noise: noise.min(64.0),
        }
    }
}

/// Pixels that differ from the background by more than its threshold,
/// row-major.
fn content_mask(rgb: &[[f32; 3]], bg: &Background) -> Vec<bool> {
    rgb.iter()
        .map(|&p| color_diff(p, bg.rgb) > bg.threshold)
        .collect()
}

/// Morphological opening of a `w x h` mask with a 3 x 3 square: erosion
/// then dilation, which removes specks and lines thinner than 3 pixels and
/// keeps every larger shape as it was.
fn open3(m: &[bool], w: usize, h: usize) -> Vec<bool> {
    let square = |m: &[bool], x: usize, y: usize, all: bool| {
        let mut hit = all;
        for yy in y.saturating_sub(1)..=(y + 1).min(h - 1) {
            for xx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                if all {
                    hit &= m[yy * w + xx];
                } else {
                    hit |= m[yy * w + xx];
                }
            }
        }
        hit
    };
    let eroded: Vec<bool> = (0..w * h)
        .map(|i| {
            let (x, y) = (i % w, i / w);
            // Pixels of the image's edge erode: the square leaves the image.
            x > 0 && y > 0 && x + 1 < w && y + 1 < h && square(m, x, y, true)
        })
        .collect();
    (0..w * h)
        .map(|i| square(&eroded, i % w, i / w, false))
        .collect()
}

/// The smallest rectangle `(x, y, w, h)` holding every set pixel of a
/// `w x h` mask; `None` if none is set.
fn mask_box(m: &[bool], w: usize) -> Option<(u32, u32, u32, u32)> {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for (i, _) in m.iter().enumerate().filter(|(_, on)| **on) {
        let (x, y) = (i % w, i / w);
        x0 = x0.min(x);
        y0 = y0.min(y);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    (x0 != usize::MAX).then(|| {
        (
            x0 as u32,
            y0 as u32,
            (x1 - x0 + 1) as u32,
            (y1 - y0 + 1) as u32,
        )
    })
}

/// The rectangle `(x, y, w, h)` of a gray image's content: pixels that
/// differ from the background ([`Background`] of the border) by more than
/// its threshold, after an opening ([`open3`]) that drops specks; the
/// whole image if nothing is left.
pub fn content_box(img: &GrayImage) -> (u32, u32, u32, u32) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let rgb: Vec<[f32; 3]> = img.pixels().map(|p| [f32::from(p.0[0]); 3]).collect();
    if rgb.is_empty() {
        return (0, 0, w as u32, h as u32);
    }
    let bg = Background::estimate(&rgb, w, h);
    let mask = content_mask(&rgb, &bg);
    mask_box(&open3(&mask, w, h), w).unwrap_or((0, 0, w as u32, h as u32))
}

/// Steps 1-6 of the module docs on a decoded image: 784 bytes, a light
/// garment on black.
pub fn preprocess(img: &DynamicImage) -> Vec<u8> {
    let rgba = img.to_rgba8();
    let (w, h) = (rgba.width() as usize, rgba.height() as usize);
    // Transparent pixels over white.
    let rgb: Vec<[f32; 3]> = rgba
        .pixels()
        .map(|p| {
            let a = f32::from(p.0[3]) / 255.0;
            [0, 1, 2].map(|c| f32::from(p.0[c]) * a + 255.0 * (1.0 - a))
        })
        .collect();
    if rgb.is_empty() {
        return vec![0; PIXELS];
    }
    let bg = Background::estimate(&rgb, w, h);
    let mask = content_mask(&rgb, &bg);
    let opened = open3(&mask, w, h);
    // Polarity: a garment darker than its background is inverted.
    let (sum, n) = rgb
        .iter()
        .zip(if opened.contains(&true) {
            &opened
        } else {
            &mask
        })
        .filter(|(_, on)| **on)
        .fold((0.0f64, 0usize), |(s, n), (&p, _)| {
            (s + f64::from(luma(p)), n + 1)
        });
    let invert = if n > 0 {
        (sum / n as f64) < f64::from(bg.luma)
    } else {
        bg.luma > 127.0
    };
    // Gray: the luminance difference from the background, less its noise,
    // stretched over what the background leaves of the range.
    let range = if invert { bg.luma } else { 255.0 - bg.luma };
    let scale = 255.0 / (range - bg.noise).max(1.0);
    let gray_px: Vec<u8> = rgb
        .iter()
        .map(|&p| {
            let d = if invert {
                bg.luma - luma(p)
            } else {
                luma(p) - bg.luma
            };
            ((d - bg.noise).max(0.0) * scale).round().min(255.0) as u8
        })
        .collect();
    let mut gray = GrayImage::from_raw(w as u32, h as u32, gray_px).expect("w x h pixels");
    // A 28 x 28 image is taken as a dataset sample, already trimmed.
    if (w, h) != (SIDE, SIDE)
        && let Some((bx, by, bw, bh)) = mask_box(&opened, w)
    {
        gray = image::imageops::crop_imm(&gray, bx, by, bw, bh).to_image();
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
    let bytes = crate::fsutil::read_capped(path, MAX_IMAGE_FILE).map_err(|e| ImageError {
        path: path.to_owned(),
        msg: e.to_string(),
    })?;
    image_from_bytes(path, &bytes)
}

/// Decodes PNG or JPEG bytes within the size limits of the module docs and
/// preprocesses them; `path` is only used in errors.
///
/// # Errors
/// Undecodable data, or an image over the limits.
pub fn image_from_bytes(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, ImageError> {
    let err = |msg: String| ImageError {
        path: path.to_owned(),
        msg,
    };
    let mut r = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?;
    match r.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
        _ => return Err(err("not a PNG or JPEG file".into())),
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_ALLOC);
    r.limits(limits);
    let img = r.decode().map_err(|e| {
        // Decoder messages may span lines; keep the error on one.
        let msg = e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        err(format!("cannot decode as PNG or JPEG: {msg}"))
    })?;
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return Err(err(format!("empty image ({w}x{h})")));
    }
    // The RGBA copy made by preprocessing counts against the same budget.
    if u64::from(w) * u64::from(h) * 4 > MAX_IMAGE_ALLOC {
        return Err(err(format!(
            "{w}x{h} pixels is more than the {} MiB limit allows",
            MAX_IMAGE_ALLOC >> 20
        )));
    }
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
    use image::{Luma, Rgb, RgbImage, Rgba, RgbaImage};

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
        // The white margin is trimmed: the 40 x 30 rectangle is scaled to
        // 28 x 21 and centred, rows 3..24.
        assert_eq!(px[0], 0, "padding is black");
        assert!(px[14 * SIDE + 14] > 200, "the dark garment became light");
        assert!(px[4 * SIDE + 1] > 200, "the garment fills the width");
        assert!(px[SIDE + 14] < 30, "padding above it is dark");
        assert!(px[26 * SIDE + 14] < 30, "padding below it is dark");
    }

    /// A garment-like test pattern: a 40 x 56 shape with texture, light on
    /// black (`dark_bg`) or dark on white.
    fn garment(dark_bg: bool) -> GrayImage {
        let mut g = GrayImage::new(40, 56);
        for (x, y, p) in g.enumerate_pixels_mut() {
            // Rows 0..56 all used; a sleeve notch and a texture.
            let inside = !(y < 20 && (12..28).contains(&x)) || y < 4;
            let v: u8 = if inside {
                120 + ((x * 7 + y * 3) % 120) as u8
            } else {
                0
            };
            *p = Luma([if dark_bg { v } else { 255 - v }]);
        }
        g
    }

    fn place(g: &GrayImage, w: u32, h: u32, x: i64, y: i64, dark_bg: bool) -> DynamicImage {
        let mut c = GrayImage::from_pixel(w, h, Luma([if dark_bg { 0 } else { 255 }]));
        image::imageops::overlay(&mut c, g, x, y);
        DynamicImage::ImageLuma8(c)
    }

    #[test]
    fn margins_offsets_and_canvas_shapes_do_not_change_the_result() {
        for dark_bg in [false, true] {
            let g = garment(dark_bg);
            // Cropped tight, with a one-pixel background border.
            let tight = preprocess(&place(&g, 42, 58, 1, 1, dark_bg));
            // The garment spans 56 rows: scaled to 28, centred.
            assert!(tight[14 * SIDE + 14] > 50, "garment in the middle");
            for (w, h, x, y) in [
                (400, 400, 180, 172), // wide margin, centred
                (400, 400, 5, 330),   // off-centre, bottom left
                (900, 120, 700, 30),  // wide non-square canvas
                (60, 700, 10, 20),    // tall non-square canvas
                (43, 59, 2, 1),       // uneven thin margin
            ] {
                let px = preprocess(&place(&g, w, h, x, y, dark_bg));
                assert_eq!(px, tight, "dark_bg {dark_bg}: {w}x{h} at ({x}, {y})");
            }
        }
    }

    #[test]
    fn a_wide_margin_still_fills_the_canvas() {
        // What the trimming fixes: scaling the whole canvas shrank a garment
        // with a wide margin to a third of its size; trimmed, it fills the
        // canvas exactly as the tight crop does.
        let g = garment(false);
        let px = preprocess(&place(&g, 168, 168, 64, 56, false));
        let lit = px.iter().filter(|&&p| p > 100).count();
        let tight = preprocess(&place(&g, 42, 58, 1, 1, false));
        let lit_tight = tight.iter().filter(|&&p| p > 100).count();
        assert_eq!(lit, lit_tight);
        assert!(
            lit > 300,
            "the garment fills the canvas: {lit} bright pixels"
        );
    }

    #[test]
    fn content_box_uses_the_border_colour_and_ignores_specks() {
        let mut g = GrayImage::from_pixel(20, 16, Luma([100]));
        g.put_pixel(3, 2, Luma([113])); // within 13 of the background
        assert_eq!(content_box(&g), (0, 0, 20, 16), "nothing to trim to");
        g.put_pixel(1, 14, Luma([0])); // a speck
        g.put_pixel(18, 1, Luma([255]));
        for y in 5..9 {
            for x in 6..12 {
                g.put_pixel(x, y, Luma([200]));
            }
        }
        assert_eq!(content_box(&g), (6, 5, 6, 4));
    }

    /// PNG signature, an IHDR chunk for an 8-bit grayscale `w x h` image
    /// and an IEND chunk (no pixel data).
    pub(crate) fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
        let chunk = |b: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
            b.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut c = kind.to_vec();
            c.extend_from_slice(data);
            b.extend_from_slice(&c);
            b.extend_from_slice(&crc32fast::hash(&c).to_be_bytes());
        };
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
        chunk(&mut b, b"IHDR", &ihdr);
        chunk(&mut b, b"IEND", &[]);
        b
    }

    #[test]
    fn oversized_images_are_refused_before_decoding() {
        // A 20000 x 20000 PNG compresses to a few hundred KB; the limit is
        // checked on the header, so a header is all this test needs.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("huge.png");
        std::fs::write(&p, png_header(20_000, 20_000)).unwrap();
        let t = std::time::Instant::now();
        let e = load_image(&p).unwrap_err().to_string();
        assert!(e.contains("huge.png"), "{e}");
        assert!(t.elapsed().as_secs() < 5, "{:?}", t.elapsed());
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
