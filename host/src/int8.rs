//! int8 post-training quantization on the workstation: calibration, `.q8`
//! export and int8 evaluation.
//!
//! The int8 model and its inference are `lenet_core::quant` (the same code
//! the firmware runs); this module adds what needs a dataset and threads:
//!
//! 1. [`calibrate`]: run the float model over calibration images (by
//!    default the first [`DEFAULT_CALIBRATION_IMAGES`] training images) and
//!    record the min/max of every pre-activation tensor;
//! 2. [`quantize`]: calibrate, then convert the flat float parameters to a
//!    [`QuantModel`];
//! 3. [`to_bytes`] / [`write_q8`] / [`read_q8`]: the `.q8` file;
//! 4. [`evaluate_int8`], [`evaluate_float`], [`compare`]: accuracy over a
//!    labelled set, in parallel with rayon.
//!
//! Images are flat `N x 784` row-major `u8` pixels (the IDX layout, as
//! `data::Dataset::images`); labels are `N` bytes. Float parameters are flat
//! `f32` in PyTorch `state_dict` order. The float forward pass here is a
//! plain reference for calibration and comparison (PyTorch semantics,
//! `x = (p / 255 - mean) / std`).
//!
//! # Measured accuracy
//!
//! Full Fashion-MNIST test set (10 000 images), calibration on the first
//! 2000 training images, float models trained in PyTorch (Adam, lr 2e-3,
//! batch 128, `x = p / 255`), measured with the ignored test
//! `trained_model_accuracy`:
//!
//! | model | float | int8 | int8 - float | same prediction |
//! |---|---|---|---|---|
//! | LeNet-5, sigmoid (12 epochs) | 87.42 % | 87.39 % | -0.03 pp | 99.36 % |
//! | LeNet-5, ReLU (6 epochs) | 88.20 % | 88.25 % | +0.05 pp | 99.13 % |
//! | LeNet-5, tanh (6 epochs) | 86.99 % | 86.97 % | -0.02 pp | 99.37 % |
//! | d2l variant, ReLU (6 epochs) | 88.49 % | 88.49 % | +0.00 pp | 99.16 % |
//!
//! The float column equals PyTorch's own test accuracy for the same weights.
//!
//! ```no_run
//! use lenet_host::int8::{compare, quantize, write_q8, QuantAct, QuantArch};
//! # fn demo(params: &[f32], train: &[u8], test: &[u8], labels: &[u8]) -> anyhow::Result<()> {
//! let model = quantize(QuantArch::LeNet5, QuantAct::Sigmoid, params, &train[..2000 * 784], 0.0, 1.0)?;
//! write_q8("model.q8".as_ref(), &model)?;
//! let c = compare(&model, params, test, labels)?;
//! println!("float {:.2} %, int8 {:.2} %", 100.0 * c.float.accuracy(), 100.0 * c.int8.accuracy());
//! # Ok(()) }
//! ```

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use rayon::prelude::*;

use crate::backend::reference::RefNet;
use lenet_core::model::{Arch, Layer, ModelKind};
pub use lenet_core::quant::{QuantAct, QuantArch, QuantModel, Ranges};
use lenet_core::quant::{Scratch, num_float_params};

/// Pixels per image.
const PIXELS: usize = 784;

/// Number of training images used for calibration unless told otherwise.
pub const DEFAULT_CALIBRATION_IMAGES: usize = 2000;

/// Correct predictions out of a total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accuracy {
    /// Correct predictions.
    pub correct: usize,
    /// Samples.
    pub total: usize,
}

impl Accuracy {
    /// `correct / total` (0 for an empty set).
    pub fn accuracy(self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

/// Float and int8 accuracy over the same samples, and how often the two
/// predict the same class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Comparison {
    /// Float model.
    pub float: Accuracy,
    /// int8 model.
    pub int8: Accuracy,
    /// Samples where both predict the same class.
    pub agree: usize,
}

/// Float model as flat parameters in `state_dict` order.
#[derive(Clone, Copy, Debug)]
pub struct FloatLeNet<'a> {
    /// Architecture.
    pub arch: QuantArch,
    /// Hidden activation.
    pub act: QuantAct,
    /// Flat parameters.
    pub params: &'a [f32],
    /// Input normalization mean.
    pub mean: f32,
    /// Input normalization standard deviation.
    pub std: f32,
}

impl FloatLeNet<'_> {
    /// Float logits of one image, widening `ranges` (if given) with every
    /// pre-activation tensor: the reference inference
    /// ([`crate::backend::reference::RefNet::forward`]) with an observer on the
    /// outputs of its convolutions and linear layers.
    ///
    /// # Panics
    ///
    /// If `image` is not 784 pixels or the parameter count is wrong (checked
    /// by the public entry points).
    pub fn forward(&self, image: &[u8], ranges: Option<&mut Ranges>) -> [f32; 10] {
        self.forward_on(&self.net(), image, ranges)
    }

    /// The resolved network the float forward runs on; resolve it once per
    /// batch of images ([`Self::forward_on`]).
    fn net(&self) -> RefNet {
        RefNet::new(Arch::LeNet(ModelKind::from(self.arch))).expect("the LeNets fit their input")
    }

    /// [`Self::forward`] on `net` (this model's [`Self::net`]).
    fn forward_on(&self, net: &RefNet, image: &[u8], mut ranges: Option<&mut Ranges>) -> [f32; 10] {
        assert_eq!(image.len(), PIXELS);
        let x: Vec<f32> = image
            .iter()
            .map(|&p| (f32::from(p) / 255.0 - self.mean) / self.std)
            .collect();
        // The pre-activation tensors in the order of `Ranges`' fields.
        let mut seen = 0;
        let logits = net.forward(self.params, self.act.into(), &x, |_, layer, y| {
            if !matches!(layer, Layer::Conv2d { .. } | Layer::Linear { .. }) {
                return;
            }
            if let Some(r) = ranges.as_deref_mut() {
                let slot = match seen {
                    0 => &mut r.conv1,
                    1 => &mut r.conv2,
                    2 => &mut r.fc1,
                    3 => &mut r.fc2,
                    _ => &mut r.logits,
                };
                Ranges::observe(slot, y);
            }
            seen += 1;
        });
        std::array::from_fn(|i| logits[i])
    }

    /// Predicted class (first maximum, as `torch.argmax`).
    pub fn predict(&self, image: &[u8]) -> usize {
        self.predict_on(&self.net(), image)
    }

    /// [`Self::predict`] on `net` (this model's [`Self::net`]).
    fn predict_on(&self, net: &RefNet, image: &[u8]) -> usize {
        argmax_f32(&self.forward_on(net, image, None))
    }

    fn check(&self) -> Result<()> {
        let expected = num_float_params(self.arch.flat());
        ensure!(
            self.params.len() == expected,
            "{:?} has {expected} float parameters, got {}",
            self.arch,
            self.params.len()
        );
        ensure!(
            self.mean.is_finite() && self.std.is_finite() && self.std > 0.0,
            "input normalization needs a finite mean and a positive std (got mean {}, std {})",
            self.mean,
            self.std
        );
        Ok(())
    }
}

fn argmax_f32(v: &[f32; 10]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

fn check_images(images: &[u8], labels: Option<&[u8]>) -> Result<usize> {
    ensure!(
        images.len().is_multiple_of(PIXELS),
        "image buffer of {} bytes is not a whole number of 28x28 images",
        images.len()
    );
    let n = images.len() / PIXELS;
    if let Some(labels) = labels {
        ensure!(labels.len() == n, "{n} images but {} labels", labels.len());
    }
    Ok(n)
}

/// Min/max of every pre-activation tensor of the float model over
/// `images` (flat `N x 784`).
///
/// # Errors
///
/// Wrong parameter count, bad normalization, an empty or ragged image
/// buffer.
pub fn calibrate(model: &FloatLeNet<'_>, images: &[u8]) -> Result<Ranges> {
    model.check()?;
    let n = check_images(images, None)?;
    ensure!(n > 0, "calibration needs at least one image");
    let net = model.net();
    Ok(images
        .par_chunks_exact(PIXELS)
        .fold(Ranges::empty, |mut r, img| {
            model.forward_on(&net, img, Some(&mut r));
            r
        })
        .reduce(Ranges::empty, Ranges::merge))
}

/// Calibrate on `calibration` (flat `N x 784` raw pixels, e.g. the first
/// [`DEFAULT_CALIBRATION_IMAGES`] training images) and quantize the float
/// model (`params` flat in `state_dict` order, trained on
/// `x = (p / 255 - mean) / std`).
///
/// Boxed: the model is 49 to 91 KB.
///
/// # Errors
///
/// As [`calibrate`], and any [`lenet_core::quant::QuantError`] of the
/// conversion.
pub fn quantize(
    arch: QuantArch,
    act: QuantAct,
    params: &[f32],
    calibration: &[u8],
    mean: f32,
    std: f32,
) -> Result<Box<QuantModel>> {
    let float = FloatLeNet {
        arch,
        act,
        params,
        mean,
        std,
    };
    let ranges = calibrate(&float, calibration)?;
    let model = QuantModel::quantize(arch, act, params, &ranges, mean, std)
        .context("quantizing the float model")?;
    Ok(Box::new(model))
}

/// The `.q8` encoding of `model`.
pub fn to_bytes(model: &QuantModel) -> Vec<u8> {
    let mut out = vec![0u8; model.encoded_len()];
    let n = model
        .write_bytes(&mut out)
        .expect("buffer sized by encoded_len");
    debug_assert_eq!(n, out.len());
    out
}

/// Parse a `.q8` encoding (boxed).
///
/// # Errors
///
/// The [`lenet_core::quant::QuantError`] of the first problem found.
pub fn from_bytes(bytes: &[u8]) -> Result<Box<QuantModel>> {
    Ok(Box::new(QuantModel::from_bytes(bytes)?))
}

/// Write `model` to `path` as `.q8`.
///
/// # Errors
///
/// I/O errors, with the path.
pub fn write_q8(path: &Path, model: &QuantModel) -> Result<()> {
    crate::fsutil::write_atomic(path, &to_bytes(model))
        .with_context(|| format!("writing {}", path.display()))
}

/// Largest `.q8` file read: the encoded size of the largest int8 LeNet
/// (every `.q8` file is exactly its architecture's size), so a larger file
/// is refused by its size before it is read.
pub const MAX_Q8_LEN: u64 = {
    use lenet_core::quant::{QuantArch, encoded_len};
    let archs = [
        QuantArch::LeNet5,
        QuantArch::LeNet5Max,
        QuantArch::LeNet5Wide,
    ];
    let mut max = 0;
    let mut i = 0;
    while i < archs.len() {
        if encoded_len(archs[i]) > max {
            max = encoded_len(archs[i]);
        }
        i += 1;
    }
    max as u64
};

/// Read a `.q8` file.
///
/// # Errors
///
/// I/O errors or a rejected file, with the path.
pub fn read_q8(path: &Path) -> Result<Box<QuantModel>> {
    let bytes = crate::fsutil::read_capped(path, MAX_Q8_LEN)
        .with_context(|| format!("reading {}", path.display()))?;
    from_bytes(&bytes).with_context(|| format!("loading {}", path.display()))
}

/// int8 predictions for every image (flat `N x 784`), in parallel.
///
/// # Errors
///
/// A ragged image buffer.
pub fn predict_int8(model: &QuantModel, images: &[u8]) -> Result<Vec<u8>> {
    check_images(images, None)?;
    Ok(images
        .par_chunks_exact(PIXELS)
        .map_init(Scratch::new, |scratch, img| {
            let img: &[u8; PIXELS] = img.try_into().expect("chunks of 784");
            model.predict(scratch, img) as u8
        })
        .collect())
}

/// int8 accuracy over a labelled set.
///
/// # Errors
///
/// A ragged image buffer or a label count that does not match.
pub fn evaluate_int8(model: &QuantModel, images: &[u8], labels: &[u8]) -> Result<Accuracy> {
    check_images(images, Some(labels))?;
    let pred = predict_int8(model, images)?;
    Ok(Accuracy {
        correct: pred.iter().zip(labels).filter(|(p, l)| p == l).count(),
        total: labels.len(),
    })
}

/// Float accuracy of the same model over a labelled set.
///
/// # Errors
///
/// As [`calibrate`], or a label count that does not match.
pub fn evaluate_float(model: &FloatLeNet<'_>, images: &[u8], labels: &[u8]) -> Result<Accuracy> {
    model.check()?;
    check_images(images, Some(labels))?;
    let net = model.net();
    let correct = images
        .par_chunks_exact(PIXELS)
        .zip(labels.par_iter())
        .filter(|(img, l)| model.predict_on(&net, img) == usize::from(**l))
        .count();
    Ok(Accuracy {
        correct,
        total: labels.len(),
    })
}

/// Float and int8 accuracy of `model` (quantized from `params`, with the
/// normalization stored in it) over a labelled set, and their agreement.
///
/// # Errors
///
/// As [`evaluate_float`].
pub fn compare(
    model: &QuantModel,
    params: &[f32],
    images: &[u8],
    labels: &[u8],
) -> Result<Comparison> {
    let (mean, std) = match model {
        QuantModel::LeNet5(m) => (m.input_mean, m.input_std),
        QuantModel::LeNet5Max(m) => (m.input_mean, m.input_std),
        QuantModel::LeNet5Wide(m) => (m.input_mean, m.input_std),
    };
    let float = FloatLeNet {
        arch: model.arch(),
        act: model.act(),
        params,
        mean,
        std,
    };
    float.check()?;
    check_images(images, Some(labels))?;
    let q = predict_int8(model, images)?;
    let net = float.net();
    let f: Vec<usize> = images
        .par_chunks_exact(PIXELS)
        .map(|img| float.predict_on(&net, img))
        .collect();
    let hits = |p: &mut dyn Iterator<Item = usize>| {
        p.zip(labels)
            .filter(|(p, l)| *p == usize::from(**l))
            .count()
    };
    Ok(Comparison {
        float: Accuracy {
            correct: hits(&mut f.iter().copied()),
            total: labels.len(),
        },
        int8: Accuracy {
            correct: hits(&mut q.iter().map(|&p| usize::from(p))),
            total: labels.len(),
        },
        agree: f
            .iter()
            .zip(&q)
            .filter(|(a, b)| **a == usize::from(**b))
            .count(),
    })
}

#[cfg(test)]
mod tests;

/// Predictions of an int8 trunk with a head learned on a device (a
/// lenet-core head file): the trunk's activations, dequantized, through
/// the `f32` head, for every image (flat `N x 784`), in parallel.
///
/// # Errors
///
/// A ragged image buffer, a head file that does not parse, or one learned
/// on another trunk (`trunk_crc` is the CRC-32 of the `.q8` file, its last
/// four bytes).
pub fn predict_with_head(
    model: &QuantModel,
    trunk_crc: u32,
    head: &[u8],
    images: &[u8],
) -> Result<Vec<u8>> {
    use lenet_core::head::{Fc3Head, Fc23Head, Head, read_head};
    fn run<H: Head + Sync, const FLAT: usize>(
        m: &lenet_core::quant::QuantLeNet<FLAT>,
        head: &H,
        images: &[u8],
    ) -> Vec<u8> {
        images
            .par_chunks_exact(PIXELS)
            .map_init(
                || (Scratch::new(), H::ZERO_INPUT, H::ZERO_ACTS),
                |(scratch, x, acts), img| {
                    let img: &[u8; PIXELS] = img.try_into().expect("chunks of 784");
                    lenet_core::head::features::<H, FLAT>(x, m, scratch, img);
                    lenet_core::head::predict(head, acts, x) as u8
                },
            )
            .collect()
    }
    fn with<H: Head + Sync>(model: &QuantModel, head: &H, images: &[u8]) -> Result<Vec<u8>> {
        #[allow(unreachable_patterns)]
        match model {
            QuantModel::LeNet5(m) => Ok(run(m, head, images)),
            QuantModel::LeNet5Max(m) => Ok(run(m, head, images)),
            _ => bail!("a learned head needs a LeNet-5 trunk"),
        }
    }
    check_images(images, None)?;
    match head.get(6) {
        Some(&0) => {
            let mut h = Fc3Head::ZERO;
            read_head(&mut h, head, trunk_crc)?;
            with(model, &h, images)
        }
        Some(&1) => {
            let mut h = Box::new(Fc23Head::ZERO);
            read_head(&mut *h, head, trunk_crc)?;
            with(model, &*h, images)
        }
        Some(&k) => bail!("unknown head kind {k}"),
        None => bail!("head file too short ({} bytes)", head.len()),
    }
}

/// The int8 architecture of `m` (loaded from `path`), checked before any
/// slow work starts.
///
/// # Errors
/// A network without an int8 path (only the LeNets have one), naming the
/// file.
pub fn quant_arch(path: &Path, m: &crate::modelfile::ModelFile) -> Result<QuantArch> {
    let kind = m.meta.arch.lenet().with_context(|| {
        format!(
            "{}: holds {}; the int8 path is for the LeNet models only",
            path.display(),
            m.meta.arch
        )
    })?;
    kind.try_into()
        .with_context(|| format!("cannot quantize {}", path.display()))
}

/// The exported `.q8` trunk at `q8`, checked to be the int8 form of the
/// model `m` loaded from `path`.
///
/// # Errors
/// An unreadable `.q8`, or one of another architecture, naming both files.
pub fn read_q8_of(
    q8: &Path,
    path: &Path,
    m: &crate::modelfile::ModelFile,
) -> Result<Box<QuantModel>> {
    let q = read_q8(q8)?;
    let want = quant_arch(path, m)?;
    if q.arch() != want {
        bail!(
            "{}: an int8 {:?} trunk, but --model {} holds {} ({} parameters); \
             give the .q8 exported from that model",
            q8.display(),
            q.arch(),
            path.display(),
            m.meta.arch,
            m.params.len()
        );
    }
    Ok(q)
}

/// Quantizes `m`, calibrating on the first `calibration` images of `train`.
///
/// # Errors
/// No training images, a network without an int8 path, or a failed
/// calibration.
pub fn quantize_model(
    m: &crate::modelfile::ModelFile,
    calibration: usize,
    train: &crate::data::Dataset,
) -> Result<Box<QuantModel>> {
    let n = calibration.min(train.len());
    if n == 0 {
        bail!("no training images to calibrate the int8 ranges on");
    }
    quantize(
        m.meta
            .arch
            .lenet()
            .context("the int8 path is for the LeNet models only")?
            .try_into()?,
        m.meta.act.into(),
        &m.params,
        &train.images[..n * PIXELS],
        m.meta.norm.mean,
        m.meta.norm.std,
    )
}

/// The training images to calibrate on: all of `train`, or those of the
/// classes not in `exclude`.
///
/// # Errors
/// `exclude` leaves no image.
pub fn calibration_set<'a>(
    train: &'a crate::data::Dataset,
    exclude: &[u8],
) -> Result<std::borrow::Cow<'a, crate::data::Dataset>> {
    let set = if exclude.is_empty() {
        std::borrow::Cow::Borrowed(train)
    } else {
        let keep: Vec<usize> = (0..train.len())
            .filter(|&i| !exclude.contains(&train.labels[i]))
            .collect();
        std::borrow::Cow::Owned(train.select(&keep))
    };
    if set.is_empty() {
        bail!("--exclude-classes leaves no training image to calibrate on");
    }
    Ok(set)
}

/// A head file learned on a device, with the trunk CRC it must carry.
pub struct HeadFile {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// CRC-32 of the `.q8` trunk it was read against (its last four bytes).
    pub trunk_crc: u32,
}

/// Reads the head file `head` up to the largest head file's size (a
/// longer file is refused by its size, a device after that many bytes, a
/// FIFO at once) and parses it against the trunk `q` read from `q8`, so a
/// head with another trunk, parameter count, or a NaN, infinite or huge
/// value is refused before any data is loaded.
///
/// # Errors
/// Either file unreadable, or a head that does not fit, naming the file.
pub fn read_head_file(q: &QuantModel, q8: &Path, head: &Path) -> Result<HeadFile> {
    use lenet_core::head::{Fc23Head, Head, head_file_len};
    let trunk =
        crate::fsutil::read_capped(q8, MAX_Q8_LEN).with_context(|| q8.display().to_string())?;
    let trunk_crc = u32::from_le_bytes(trunk[trunk.len().saturating_sub(4)..].try_into()?);
    let max = head_file_len(&Fc23Head::ZERO) as u64;
    let bytes =
        crate::fsutil::read_capped(head, max).with_context(|| head.display().to_string())?;
    // Parse it once now (on no images) so every check runs before the data.
    predict_with_head(q, trunk_crc, &bytes, &[]).with_context(|| head.display().to_string())?;
    Ok(HeadFile { bytes, trunk_crc })
}

/// Correct predictions and samples per class of the int8 trunk `q` with
/// head file `h` (read from `head`) on `ds`.
///
/// # Errors
/// A head that does not fit the trunk, naming the file.
pub fn head_accuracy(
    q: &QuantModel,
    h: &HeadFile,
    head: &Path,
    ds: &crate::data::Dataset,
) -> Result<[Accuracy; crate::data::CLASSES]> {
    let pred = predict_with_head(q, h.trunk_crc, &h.bytes, &ds.images)
        .with_context(|| head.display().to_string())?;
    let mut acc = [Accuracy::default(); crate::data::CLASSES];
    for (&p, &l) in pred.iter().zip(&ds.labels) {
        let a = &mut acc[usize::from(l)];
        a.total += 1;
        a.correct += usize::from(p == l);
    }
    Ok(acc)
}
