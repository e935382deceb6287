//! `predict`'s preprocessing on Fashion-MNIST test images dressed up as
//! photos: upscaled 4x and placed on larger canvases with a white margin
//! and specks of dust, a dark noisy background, coloured backgrounds (dark
//! and light garments), a light garment on mid grey, and a tight crop
//! whose garment touches the border. Each photo,
//! preprocessed, is compared with the original 28 x 28 image by
//! correlation, so no trained model is needed. Needs the data set
//! (`/usr/share/datasets/fashion-mnist` or `$FASHION_MNIST_DIR`); skipped
//! without it.

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, Rgb, RgbImage};
use lenet_host::data::{self, PIXELS, SIDE};
use lenet_host::predict::preprocess;
use lenet_host::rng::SplitMix64;

/// Images taken from the test set.
const IMAGES: usize = 60;
/// Upscaling of the garment.
const UP: u32 = 4;

/// Pearson correlation of two images.
fn correlation(a: &[u8], b: &[u8]) -> f64 {
    let n = a.len() as f64;
    let ma = a.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let mb = b.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x) - ma, f64::from(y) - mb);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa * bb).sqrt().max(1e-9)
}

/// A photo of garment `g` (light on black, 0..=255): on a `w x h` canvas
/// of `bg`, at `(x0, y0)`, in colour `fg`, with `noise` added per channel.
#[allow(clippy::too_many_arguments)]
fn photo(
    g: &GrayImage,
    w: u32,
    h: u32,
    x0: u32,
    y0: u32,
    bg: [f32; 3],
    fg: [f32; 3],
    noise: f32,
    rng: &mut SplitMix64,
) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let a = if (x0..x0 + g.width()).contains(&x) && (y0..y0 + g.height()).contains(&y) {
            f32::from(g.get_pixel(x - x0, y - y0).0[0]) / 255.0
        } else {
            0.0
        };
        Rgb([0, 1, 2].map(|c| {
            let n = (rng.next_f32() * 2.0 - 1.0) * noise;
            (bg[c] * (1.0 - a) + fg[c] * a + n)
                .round()
                .clamp(0.0, 255.0) as u8
        }))
    })
}

#[test]
fn photos_on_hard_backgrounds_preprocess_close_to_the_original() {
    let Ok(src) = data::locate(None) else {
        eprintln!("skipped: no Fashion-MNIST data");
        return;
    };
    let test = data::load(&src, 0).unwrap().test;
    let mut rng = SplitMix64::new(42);
    let kinds = [
        "clean, black background",
        "white margin + specks",
        "dark noisy background",
        "dark garment on blue",
        "light garment on green",
        "light grey on mid grey",
        "tight crop, dark on white",
    ];
    let mut sums = vec![0.0f64; kinds.len()];
    let mut worst = vec![1.0f64; kinds.len()];
    for i in 0..IMAGES {
        let x = test.image(i);
        let small = GrayImage::from_raw(SIDE as u32, SIDE as u32, x.to_vec()).unwrap();
        let g = image::imageops::resize(
            &small,
            SIDE as u32 * UP,
            SIDE as u32 * UP,
            FilterType::Triangle,
        );
        let (w, h) = (300 + rng.below(60) as u32, 260 + rng.below(60) as u32);
        let (x0, y0) = (20 + rng.below(100) as u32, 20 + rng.below(80) as u32);
        for (k, kind) in kinds.iter().enumerate() {
            let mut img = match k {
                0 => photo(&g, w, h, x0, y0, [0.0; 3], [255.0; 3], 0.0, &mut rng),
                1 => photo(&g, w, h, x0, y0, [255.0; 3], [0.0; 3], 0.0, &mut rng),
                2 => photo(&g, w, h, x0, y0, [20.0; 3], [255.0; 3], 12.0, &mut rng),
                3 => photo(
                    &g,
                    w,
                    h,
                    x0,
                    y0,
                    [70.0, 130.0, 200.0],
                    [110.0, 20.0, 20.0],
                    4.0,
                    &mut rng,
                ),
                4 => photo(
                    &g,
                    w,
                    h,
                    x0,
                    y0,
                    [30.0, 90.0, 40.0],
                    [250.0, 240.0, 200.0],
                    4.0,
                    &mut rng,
                ),
                5 => photo(&g, w, h, x0, y0, [110.0; 3], [200.0; 3], 3.0, &mut rng),
                // The garment touches the border: no margin at all.
                _ => {
                    let s = SIDE as u32 * UP;
                    photo(&g, s, s, 0, 0, [255.0; 3], [0.0; 3], 0.0, &mut rng)
                }
            };
            if k == 1 {
                // Dust: single dark pixels and a 2 x 2 speck in the margin.
                for (sx, sy) in [(2, 3), (w - 3, h / 2), (w / 2, h - 2), (5, h - 6)] {
                    img.put_pixel(sx, sy, Rgb([0, 0, 0]));
                }
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    img.put_pixel(w - 8 + dx, 6 + dy, Rgb([90, 90, 90]));
                }
            }
            let px = preprocess(&DynamicImage::ImageRgb8(img));
            assert_eq!(px.len(), PIXELS);
            let r = correlation(&px, x);
            sums[k] += r;
            worst[k] = worst[k].min(r);
            if r < 0.6 {
                eprintln!("{kind}: test image {i}: correlation {r:.3}");
            }
        }
    }
    let mut failed = Vec::new();
    for (k, kind) in kinds.iter().enumerate() {
        let mean = sums[k] / IMAGES as f64;
        eprintln!(
            "{kind:>24}: mean correlation {mean:.3}, worst {:.3}",
            worst[k]
        );
        if mean < 0.9 || mean < sums[0] / IMAGES as f64 - 0.02 || worst[k] < 0.7 {
            failed.push(format!("{kind} (mean {mean:.3}, worst {:.3})", worst[k]));
        }
    }
    assert!(
        failed.is_empty(),
        "too far from the originals: {}",
        failed.join("; ")
    );
}
