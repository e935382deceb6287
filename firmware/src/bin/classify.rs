//! Classifies a file of Fashion-MNIST images on the device.
//!
//! Host files through semihosting (relative to the directory QEMU runs in):
//! - in: `images.u8`, N × 784 pixel bytes (row-major 28×28), or the
//!   uncompressed IDX file itself (its 16-byte header is skipped);
//! - out: `predictions.bin`, one 11-byte record per image: the predicted
//!   class (u8), then the ten int8 logits.
//!
//! Report (plain text, semihosting stderr): images classified, instructions
//! (QEMU, `-icount shift=6`) or cycles (board) per inference, stack
//! high-water mark. Exit status 0 on success.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use lenet_firmware::{
    argmax, exit_failure, exit_success, kernel, meter, read_exact, report, report_stack,
};
use semihosting::{fs::File, io::Write};

/// Pixels in one image (28 × 28).
const PIXELS: usize = 784;
/// Bytes in one output record: class, then 10 logits.
const RECORD: usize = 11;
/// Records written to the host per write call.
const BATCH: usize = 64;
/// Big-endian magic of an IDX file of unsigned bytes with 3 dimensions.
const IDX3_U8: [u8; 4] = [0, 0, 8, 3];

#[entry]
fn main() -> ! {
    let meter = meter::Meter::new();
    let mut model = kernel::Model::new();

    let Ok(mut input) = File::open(c"images.u8") else {
        report!("classify: cannot open images.u8 in the current directory");
        exit_failure(2);
    };
    let Ok(len) = input.metadata().map(|m| m.len() as usize) else {
        report!("classify: cannot read the length of images.u8");
        exit_failure(2);
    };
    let Ok(mut output) = File::create(c"predictions.bin") else {
        report!("classify: cannot create predictions.bin");
        exit_failure(2);
    };

    let mut image = [0u8; PIXELS];
    let mut header = [0u8; 16];
    let mut body = len;
    if len >= 16 && len % PIXELS == 16 {
        read_exact(
            &mut input,
            &mut header,
            "classify: short read from images.u8",
        );
        if header[..4] != IDX3_U8 {
            report!("classify: images.u8 is neither raw N×784 bytes nor an IDX3 file");
            exit_failure(2);
        }
        body -= 16;
    }
    if body % PIXELS != 0 {
        report!(
            "classify: images.u8 holds ",
            body,
            " bytes, not a multiple of 784"
        );
        exit_failure(2);
    }
    let n = body / PIXELS;
    defmt::info!("classifying {} images", n);

    let mut records = [[0u8; RECORD]; BATCH];
    let mut filled = 0;
    let (mut total, mut min, mut max) = (0u64, u32::MAX, 0u32);
    let mut logits = [0i8; 10];
    for i in 0..n {
        read_exact(
            &mut input,
            &mut image,
            "classify: short read from images.u8",
        );
        let t = meter.start();
        model.classify(&mut logits, &image);
        let work = meter.stop(t);
        total += u64::from(work);
        min = min.min(work);
        max = max.max(work);

        // `filled < BATCH` here (it is reset when it reaches BATCH).
        let rec = &mut records[filled % BATCH];
        rec[0] = argmax(&logits) as u8;
        for (r, &l) in rec[1..].iter_mut().zip(&logits) {
            *r = l as u8;
        }
        filled += 1;
        if filled == BATCH || i + 1 == n {
            let done = records
                .as_flattened()
                .get(..filled * RECORD)
                .unwrap_or_default();
            if output.write_all(done).is_err() {
                report!("classify: writing predictions.bin failed");
                exit_failure(2);
            }
            filled = 0;
        }
        if (i + 1) % 1000 == 0 {
            defmt::info!("{} images", i + 1);
        }
    }
    drop(output);

    let mean = meter::mean(total, n as u32);
    report!(
        "kernel: ",
        if kernel::FAST {
            "cortex-m4 (SMLAD)"
        } else {
            "lenet-core reference"
        }
    );
    report!("images: ", n);
    report!(
        meter::UNIT,
        " per inference: mean ",
        mean,
        " min ",
        if n > 0 { min } else { 0 },
        " max ",
        max
    );
    report_stack();
    exit_success()
}
