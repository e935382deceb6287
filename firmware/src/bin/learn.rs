//! Learns on the device: the embedded int8 model is a frozen feature
//! extractor, and its last layer, in `f32`, keeps training on labelled
//! images that arrive one at a time (lenet-core's `head` module: linear
//! and cross-entropy backward, SGD with a cosine-decayed rate, batch 1).
//!
//! The committed model for it (`model/shipped.q8`) never saw Sandal (5)
//! and Bag (8); one pass over a stream of all ten classes teaches them.
//!
//! Host files through semihosting (relative to the directory QEMU runs in):
//! - in: `train.u8` (N × 784 pixel bytes, or the IDX file) and
//!   `train-labels.u8` (N label bytes, or the IDX file): the stream, read
//!   and learned one image at a time, in file order;
//! - in: `test.u8`, `test-labels.u8`: evaluated before and after;
//! - out: `head.bin`, the learned head in lenet-core's head file format
//!   (`host eval --head` reads it).
//!
//! Report (plain text, semihosting stderr): accuracy of the shipped model
//! and of the learned head on all test images, on the new classes and on
//! the old ones; instructions (QEMU) or cycles (board) per training sample
//! and per inference; static RAM and stack high-water mark.
//!
//! `--features fc23-head` trains the last two layers instead (44 KB of
//! parameters: more RAM than the 32 KB this program is meant to fit, for
//! measuring the trade-off).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use lenet_core::head::{Head, cosine_lr, predict, train_step, write_head};
use lenet_core::optim::{Parameters, Sgd, SgdState};
use lenet_firmware::{
    argmax, exit_failure, exit_success,
    kernel::{self, MODEL, MODEL_CRC},
    meter, read_exact, report,
    report::{Line, Show},
    report_stack, static_ram,
};
use semihosting::{fs::File, io::Write};

#[cfg(not(feature = "fc23-head"))]
type H = lenet_core::head::Fc3Head;
#[cfg(feature = "fc23-head")]
type H = lenet_core::head::Fc23Head;

/// Peak learning rate of the cosine decay over the stream (tuned on the
/// host, where lenet-core computes the same head bit for bit).
#[cfg(not(feature = "fc23-head"))]
const LR: f32 = 0.12;
#[cfg(feature = "fc23-head")]
const LR: f32 = 0.1;

/// The classes the shipped model never saw.
const NEW: [u8; 2] = [5, 8];
/// Pixels in one image (28 × 28).
const PIXELS: usize = 784;
/// Classes.
const CLASSES: usize = 10;

// The head, its gradients and the optimizer state: statics, so the RAM
// they take is in the ELF's `.bss`. Only `main` touches them.
static mut HEAD: H = H::ZERO;
static mut GRADS: H = H::ZERO;
static mut STATE: SgdState<H> = SgdState::new(H::ZERO);

/// Test-set tallies: right answers per class and images per class.
struct Tally {
    right: [u32; CLASSES],
    seen: [u32; CLASSES],
}

impl Tally {
    const fn new() -> Self {
        Self {
            right: [0; CLASSES],
            seen: [0; CLASSES],
        }
    }

    fn add(&mut self, label: usize, predicted: usize) {
        self.seen[label] += 1;
        self.right[label] += u32::from(label == predicted);
    }

    /// (right, seen) over the classes `new` selects (`true`: the new ones).
    fn sum(&self, new: Option<bool>) -> (u32, u32) {
        let mut s = (0, 0);
        for c in 0..CLASSES {
            if new.is_none_or(|n| n == NEW.contains(&(c as u8))) {
                s.0 += self.right[c];
                s.1 += self.seen[c];
            }
        }
        s
    }

    fn report(&self, what: &str) {
        let (all, new, old) = (self.sum(None), self.sum(Some(true)), self.sum(Some(false)));
        report!(
            what,
            ": all ",
            Pct(all),
            " new ",
            Pct(new),
            " old ",
            Pct(old)
        );
    }
}

/// `right/seen = xx.xx%`, without floating-point formatting.
struct Pct((u32, u32));

impl Show for Pct {
    fn show(&self, line: &mut Line) {
        let (right, seen) = self.0;
        right.show(line);
        line.push(b"/");
        seen.show(line);
        line.push(b" = ");
        // Basis points, rounded half up (right <= seen < 2^32 / 20000).
        let bp = (right * 20_000 / seen.max(1)).div_ceil(2);
        (bp / 100).show(line);
        line.push(b".");
        let frac = bp % 100;
        if frac < 10 {
            line.push(b"0");
        }
        frac.show(line);
        line.push(b"%");
    }
}

/// An input file of `items` of `size` bytes, raw or IDX (header skipped):
/// images are IDX when their length is 16 more than a multiple of 784,
/// labels when it is 8 more than the number of images (`items`).
struct Input {
    file: File,
    items: usize,
}

impl Input {
    fn open(name: &core::ffi::CStr, size: usize, header: usize, items: Option<usize>) -> Self {
        let Ok(mut file) = File::open(name) else {
            report!("learn: cannot open a file in the current directory");
            exit_failure(2);
        };
        let Ok(len) = file.metadata().map(|m| m.len() as usize) else {
            report!("learn: cannot read a file's length");
            exit_failure(2);
        };
        let mut body = len;
        let idx = len >= header
            && match items {
                Some(n) => len == n + header,
                None => (len - header).is_multiple_of(size) && !len.is_multiple_of(size),
            };
        if idx {
            let mut skip = [0u8; 16];
            read_exact(&mut file, &mut skip[..header], "learn: short read");
            body -= header;
        }
        if body % size != 0 {
            report!("learn: a file holds ", body, " bytes, not whole items");
            exit_failure(2);
        }
        Self {
            file,
            items: body / size,
        }
    }
}

#[entry]
fn main() -> ! {
    let meter = meter::Meter::new();
    let mut model = kernel::Model::new();
    // SAFETY: `main` runs once and is the only code that names these
    // statics, so these are the only references to them.
    let (head, grads, state) = unsafe {
        (
            exclusive(&raw mut HEAD),
            exclusive(&raw mut GRADS),
            exclusive(&raw mut STATE),
        )
    };
    head.set_from_model(&MODEL);

    let mut train = Input::open(c"train.u8", PIXELS, 16, None);
    let mut train_labels = Input::open(c"train-labels.u8", 1, 8, Some(train.items));
    let mut test = Input::open(c"test.u8", PIXELS, 16, None);
    let mut test_labels = Input::open(c"test-labels.u8", 1, 8, Some(test.items));
    let n = train.items;
    if train_labels.items != n || test_labels.items != test.items {
        report!("learn: image and label files differ in length");
        exit_failure(2);
    }

    let mut image = [0u8; PIXELS];
    let mut label = [0u8; 1];
    let mut logits = [0i8; 10];
    let mut x = H::ZERO_INPUT;
    // `()` for the last-layer head, the hidden activations for fc2 + fc3.
    #[allow(clippy::let_unit_value)]
    let mut acts = H::ZERO_ACTS;

    // One pass over the stream: trunk (int8), then one step of the head.
    let (mut trunk_work, mut step_work) = (0u64, 0u64);
    for i in 0..n {
        read_exact(&mut train.file, &mut image, "learn: short read");
        read_exact(&mut train_labels.file, &mut label, "learn: short read");
        let y = usize::from(label[0]);
        if y >= CLASSES {
            report!("learn: label ", y, " out of range");
            exit_failure(2);
        }
        let t = meter.start();
        model.classify(&mut logits, &image);
        model.head_input::<H>(&mut x);
        let t2 = meter.start();
        let opt = Sgd::new(cosine_lr(LR, i, n));
        train_step(head, grads, &mut acts, &opt, state, &x, y);
        step_work += u64::from(meter.stop(t2));
        trunk_work += u64::from(meter.stop(t));
    }
    defmt::info!("learned {} images", n);

    // The test set: the shipped model's int8 answer and the learned head's.
    let (mut before, mut after) = (Tally::new(), Tally::new());
    let (mut infer_work, mut head_work) = (0u64, 0u64);
    for _ in 0..test.items {
        read_exact(&mut test.file, &mut image, "learn: short read");
        read_exact(&mut test_labels.file, &mut label, "learn: short read");
        let y = usize::from(label[0]).min(CLASSES - 1);
        let t = meter.start();
        model.classify(&mut logits, &image);
        let t2 = meter.start();
        model.head_input::<H>(&mut x);
        let p = predict(head, &mut acts, &x);
        head_work += u64::from(meter.stop(t2));
        infer_work += u64::from(meter.stop(t));
        before.add(y, argmax(&logits));
        after.add(y, p);
    }

    let Ok(mut out) = File::create(c"head.bin") else {
        report!("learn: cannot create head.bin");
        exit_failure(2);
    };
    if write_head(head, MODEL_CRC, |b| out.write_all(b)).is_err() {
        report!("learn: writing head.bin failed");
        exit_failure(2);
    }
    drop(out);

    report!(
        "head: ",
        if H::CODE == 0 { "fc3" } else { "fc2+fc3" },
        ", ",
        head.num_params(),
        " parameters, SGD, cosine decay from lr ",
        (LR * 1000.0) as u32,
        "e-3"
    );
    report!("trained on: ", n, " images, one pass");
    report!("test images: ", test.items);
    before.report("before (shipped int8 model)");
    after.report("after (learned head)");
    let per = |w: u64, k: usize| meter::mean(w, k as u32);
    report!(
        meter::UNIT,
        " per training sample: ",
        per(trunk_work, n),
        " (head step ",
        per(step_work, n),
        ")"
    );
    report!(
        meter::UNIT,
        " per inference with the learned head: ",
        per(infer_work, test.items),
        " (head ",
        per(head_work, test.items),
        ")"
    );
    report!("static RAM: ", static_ram(), " bytes");
    report_stack();
    exit_success()
}

/// The one reference to a `static mut`.
///
/// # Safety
///
/// No other reference to `*p` may exist while the result lives.
unsafe fn exclusive<T>(p: *mut T) -> &'static mut T {
    // SAFETY: the caller's promise; `p` points to a static.
    unsafe { &mut *p }
}
