//! Classifies the few test images stored in flash: a board needs no host
//! file system for this one. Prints each prediction beside its label and
//! exits with failure if fewer than half are right (a broken model or
//! kernel, not a slightly worse one).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use lenet_firmware::{argmax, exit_failure, exit_success, kernel, meter, report, stack_high_water};

/// The first Fashion-MNIST test images (28 × 28 bytes each) and their labels.
static IMAGES: &[u8] = include_bytes!("../../demo/images.u8");
static LABELS: &[u8] = include_bytes!("../../demo/labels.u8");
/// Fashion-MNIST class names.
const CLASSES: [&str; 10] = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

#[entry]
fn main() -> ! {
    let meter = meter::Meter::new();
    let mut model = kernel::Model::new();
    let mut logits = [0i8; 10];
    let mut right = 0;
    for (image, &label) in IMAGES.as_chunks::<784>().0.iter().zip(LABELS) {
        let t = meter.start();
        model.classify(&mut logits, image);
        let work = meter.stop(t);
        let class = argmax(&logits);
        right += usize::from(class == usize::from(label));
        defmt::info!(
            "{=str} (label {=str}), {} {=str}",
            CLASSES[class],
            CLASSES[usize::from(label)],
            work,
            meter::UNIT
        );
        report!(
            "predicted ",
            CLASSES[class],
            ", label ",
            CLASSES[usize::from(label)],
            ", ",
            work,
            " ",
            meter::UNIT
        );
    }
    report!(
        "demo: ",
        right,
        "/",
        LABELS.len(),
        " right, stack high-water ",
        stack_high_water(),
        " bytes"
    );
    if 2 * right < LABELS.len() {
        exit_failure(1);
    }
    exit_success()
}
