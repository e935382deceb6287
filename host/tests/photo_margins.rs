//! How `predict` does on Fashion-MNIST test images dressed up as product
//! photos: upscaled 4x, dark garment on white, on a larger white canvas,
//! off-centre. Trains a model on the real data first (about a minute), so
//! it is ignored by default:
//!
//!   cargo test --release -p lenet-host --test photo_margins -- --ignored --nocapture
//!
//! Prints the accuracy on the plain 28x28 images, on the tightly cropped
//! photos, on the photos with a margin, and on the photos with a margin
//! preprocessed without the background trimming (the earlier pipeline).

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, Luma};
mod common;

use common::train_on_cpu;
use lenet_host::data::{self, PIXELS, SIDE};
use lenet_host::predict::{predict, preprocess};
use lenet_host::train::TrainSettings;

/// The earlier preprocessing: invert a light background, scale the whole
/// canvas's longest side to 28, centre. (No trimming.)
fn untrimmed(img: &GrayImage) -> Vec<u8> {
    let mut g = img.clone();
    image::imageops::invert(&mut g);
    let (w, h) = g.dimensions();
    let s = SIDE as f64 / f64::from(w.max(h));
    let nw = ((f64::from(w) * s).round() as u32).clamp(1, 28);
    let nh = ((f64::from(h) * s).round() as u32).clamp(1, 28);
    let r = image::imageops::resize(&g, nw, nh, FilterType::Lanczos3);
    let mut c = GrayImage::new(28, 28);
    image::imageops::overlay(
        &mut c,
        &r,
        i64::from((28 - nw) / 2),
        i64::from((28 - nh) / 2),
    );
    c.into_raw()
}

/// A named, preprocessed image with its label, as `predict` takes it.
type Input = (String, Vec<u8>, Option<usize>);

#[test]
#[ignore = "trains on the real data; run by hand"]
fn photos_with_margins_classify_like_tight_crops() {
    let d = data::load(&data::locate(None).unwrap(), 0).unwrap();
    let s = TrainSettings {
        model: "lenet5-max".into(),
        act: "relu".into(),
        lr: 3e-3,
        epochs: 4,
        threads: 2,
        ..TrainSettings::default()
    };
    let out = tempfile::tempdir().unwrap();
    let (mut t, sum) = train_on_cpu(&s, &d, out.path());
    let n = 1000;
    let mut sets: [Vec<Input>; 4] = Default::default();
    for i in 0..n {
        let label = Some(usize::from(d.test.labels[i]));
        let px = d.test.image(i).to_vec();
        let small = GrayImage::from_raw(28, 28, px.iter().map(|p| 255 - p).collect()).unwrap();
        let photo = image::imageops::resize(&small, 112, 112, FilterType::Lanczos3);
        let mut canvas = GrayImage::from_pixel(300, 260, Luma([255]));
        let (x, y) = (20 + (i as i64 * 37) % 160, 10 + (i as i64 * 53) % 130);
        image::imageops::overlay(&mut canvas, &photo, x, y);
        sets[0].push((format!("{i}"), px, label));
        sets[1].push((
            format!("{i}"),
            preprocess(&DynamicImage::ImageLuma8(photo)),
            label,
        ));
        sets[2].push((
            format!("{i}"),
            preprocess(&DynamicImage::ImageLuma8(canvas.clone())),
            label,
        ));
        sets[3].push((format!("{i}"), untrimmed(&canvas), label));
        assert_eq!(sets[2][i].1.len(), PIXELS);
    }
    let mut acc = Vec::new();
    for set in &sets {
        let p = predict(t.as_mut(), s.norm(), set).unwrap();
        let right = p.iter().filter(|p| Some(p.class) == p.label).count();
        acc.push(100.0 * right as f64 / n as f64);
    }
    eprintln!(
        "test accuracy {:.2}% (full test set); on {n} test images: 28x28 {:.1}%, tight photos {:.1}%, \
         photos with margins {:.1}%, the same without trimming {:.1}%",
        100.0 * sum.test.accuracy,
        acc[0],
        acc[1],
        acc[2],
        acc[3]
    );
    assert!(acc[2] >= acc[1] - 2.0, "margins cost accuracy: {acc:?}");
}
