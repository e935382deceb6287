//! The `.q8` model file: writer and checking parser (layout in the parent
//! module docs).

use super::{QConv2d, QLinear, QParams, QuantAct, QuantArch, QuantError, QuantLeNet, crc32};

/// First four bytes of every `.q8` file.
pub const MAGIC: [u8; 4] = *b"LQ8M";
/// Format version written by this build, the only one it reads.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes before the normalization and quantization parameters.
pub const HEADER_LEN: usize = 36;
/// Normalization (2 x f32) and 10 tensor quantizations (f32 + i32).
const PARAMS_LEN: usize = 8 + 10 * 8;
/// Names of the 12 shape fields, for errors.
const SHAPE_NAMES: [&str; 12] = [
    "input channels",
    "input height",
    "input width",
    "conv1 out channels",
    "conv1 kernel",
    "conv1 padding",
    "conv2 out channels",
    "conv2 kernel",
    "fc1 in",
    "fc1 out",
    "fc2 out",
    "classes",
];

/// The 12 shape fields of an architecture.
const fn shapes(arch: QuantArch) -> [u16; 12] {
    let (c1, c2) = arch.channels();
    [
        1,
        28,
        28,
        c1 as u16,
        5,
        arch.conv1_padding() as u16,
        c2 as u16,
        5,
        arch.flat() as u16,
        120,
        84,
        10,
    ]
}

/// Bytes of one layer: weights plus four per-channel arrays of 4 bytes.
const fn layer_len(out: usize, fan_in: usize) -> usize {
    out * fan_in + 16 * out
}

/// Length of the `.q8` encoding of a model of `arch`.
///
/// # Examples
///
/// ```
/// use lenet_core::quant::{QuantArch, encoded_len};
/// assert_eq!(encoded_len(QuantArch::LeNet5), 66_398);
/// assert_eq!(encoded_len(QuantArch::LeNet5Max), 49_118);
/// assert_eq!(encoded_len(QuantArch::LeNet5Wide), 90_904);
/// ```
pub const fn encoded_len(arch: QuantArch) -> usize {
    let (c1, c2) = arch.channels();
    HEADER_LEN
        + PARAMS_LEN
        + layer_len(c1, 25)
        + layer_len(c2, 25 * c1)
        + layer_len(120, arch.flat())
        + layer_len(84, 120)
        + layer_len(10, 84)
        + 4 * 256
        + 4
}

/// Little-endian writer over a buffer already checked to be long enough.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.pos..][..b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn i32s(&mut self, v: &[i32]) {
        for x in v {
            self.bytes(&x.to_le_bytes());
        }
    }
    fn f32s(&mut self, v: &[f32]) {
        for x in v {
            self.bytes(&x.to_le_bytes());
        }
    }
    fn i8s(&mut self, v: &[i8]) {
        for &x in v {
            self.bytes(&[x as u8]);
        }
    }
    fn qparams(&mut self, q: QParams) {
        self.f32s(&[q.scale]);
        self.i32s(&[q.zero_point]);
    }
    fn layer(&mut self, weight: &[i8], scale: &[f32], bias: &[i32], mult: &[i32], shift: &[i32]) {
        self.i8s(weight);
        self.f32s(scale);
        self.i32s(bias);
        self.i32s(mult);
        self.i32s(shift);
    }
}

/// Little-endian reader over bytes already checked to be long enough.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        out.copy_from_slice(&self.buf[self.pos..][..N]);
        self.pos += N;
        out
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.take())
    }
    fn f32(&mut self) -> f32 {
        f32::from_le_bytes(self.take())
    }
    fn i8s(&mut self, out: &mut [i8]) {
        for x in out {
            *x = self.take::<1>()[0] as i8;
        }
    }
    fn qparams(&mut self, what: &'static str) -> Result<QParams, QuantError> {
        let q = QParams {
            scale: self.f32(),
            zero_point: self.i32(),
        };
        if !(q.scale.is_finite() && q.scale > 0.0 && (-128..=127).contains(&q.zero_point)) {
            return Err(QuantError::InvalidParameter { what });
        }
        Ok(q)
    }
    fn layer(
        &mut self,
        what: &'static str,
        weight: &mut [i8],
        scale: &mut [f32],
        bias: &mut [i32],
        mult: &mut [i32],
        shift: &mut [i32],
    ) -> Result<(), QuantError> {
        self.i8s(weight);
        for s in scale.iter_mut() {
            *s = self.f32();
            if !(s.is_finite() && *s > 0.0) {
                return Err(QuantError::InvalidParameter { what });
            }
        }
        for b in bias.iter_mut() {
            *b = self.i32();
        }
        for m in mult.iter_mut() {
            *m = self.i32();
            if *m < 0 {
                return Err(QuantError::InvalidParameter { what });
            }
        }
        for s in shift.iter_mut() {
            *s = self.i32();
            if !(-31..=30).contains(s) {
                return Err(QuantError::InvalidParameter { what });
            }
        }
        Ok(())
    }
}

/// Checks shared by every architecture, in the documented order; returns
/// the architecture and activation.
fn check_common(bytes: &[u8]) -> Result<(QuantArch, QuantAct), QuantError> {
    if bytes.len() < HEADER_LEN + 4 {
        return Err(QuantError::TooShort { len: bytes.len() });
    }
    let mut r = Reader { buf: bytes, pos: 0 };
    let magic = r.take::<4>();
    if magic != MAGIC {
        return Err(QuantError::BadMagic { found: magic });
    }
    let version = r.u16();
    if version != FORMAT_VERSION {
        return Err(QuantError::UnsupportedVersion { found: version });
    }
    let [arch, act] = r.take::<2>();
    let declared = u32::from_le_bytes(r.take()) as usize;
    if declared != bytes.len() {
        return Err(QuantError::SizeMismatch {
            expected: declared,
            found: bytes.len(),
        });
    }
    let (content, tail) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let computed = crc32(content);
    if stored != computed {
        return Err(QuantError::ChecksumMismatch { stored, computed });
    }
    let arch = QuantArch::from_code(arch).ok_or(QuantError::UnknownArch { found: arch })?;
    let act = QuantAct::from_code(act).ok_or(QuantError::UnknownActivation { found: act })?;
    Ok((arch, act))
}

/// Architecture of a `.q8` file after the checks shared by all of them.
pub(super) fn peek_arch(bytes: &[u8]) -> Result<QuantArch, QuantError> {
    check_common(bytes).map(|(arch, _)| arch)
}

fn read_conv<const CO: usize, const CI: usize, const K: usize>(
    r: &mut Reader<'_>,
    what: &'static str,
    c: &mut QConv2d<CO, CI, K>,
) -> Result<(), QuantError> {
    let w = c
        .weight
        .as_flattened_mut()
        .as_flattened_mut()
        .as_flattened_mut();
    r.layer(
        what,
        w,
        &mut c.weight_scale,
        &mut c.bias,
        &mut c.multiplier,
        &mut c.shift,
    )
}

fn read_linear<const O: usize, const I: usize>(
    r: &mut Reader<'_>,
    what: &'static str,
    l: &mut QLinear<O, I>,
) -> Result<(), QuantError> {
    r.layer(
        what,
        l.weight.as_flattened_mut(),
        &mut l.weight_scale,
        &mut l.bias,
        &mut l.multiplier,
        &mut l.shift,
    )
}

impl<const FLAT: usize, const C1: usize, const C2: usize> QuantLeNet<FLAT, C1, C2> {
    /// Parse a `.q8` file of this architecture.
    ///
    /// # Errors
    ///
    /// The first problem found (see the module docs for the order):
    /// [`QuantError::TooShort`], [`QuantError::BadMagic`],
    /// [`QuantError::UnsupportedVersion`], [`QuantError::SizeMismatch`],
    /// [`QuantError::ChecksumMismatch`], [`QuantError::UnknownArch`],
    /// [`QuantError::UnknownActivation`], [`QuantError::WrongArch`],
    /// [`QuantError::ShapeMismatch`], [`QuantError::InvalidParameter`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, QuantError> {
        let mut model = Self::zeroed();
        model.read_from(bytes)?;
        Ok(model)
    }

    /// [`Self::from_bytes`] into `self` in place (no model-sized stack
    /// temporary). On error `self` holds an unspecified mix of old and new
    /// values.
    ///
    /// # Errors
    ///
    /// As [`Self::from_bytes`].
    pub fn read_from(&mut self, bytes: &[u8]) -> Result<(), QuantError> {
        let (arch, act) = check_common(bytes)?;
        if arch != Self::ARCH {
            return Err(QuantError::WrongArch {
                expected: Self::ARCH,
                found: arch,
            });
        }
        let expected = encoded_len(arch);
        if bytes.len() != expected {
            return Err(QuantError::SizeMismatch {
                expected,
                found: bytes.len(),
            });
        }
        let mut r = Reader {
            buf: bytes,
            pos: 12,
        };
        for (i, (want, name)) in shapes(arch).into_iter().zip(SHAPE_NAMES).enumerate() {
            let found = r.u16();
            debug_assert_eq!(r.pos, 14 + 2 * i);
            if found != want {
                return Err(QuantError::ShapeMismatch {
                    field: name,
                    expected: want,
                    found,
                });
            }
        }
        self.act = act;
        self.input_mean = r.f32();
        self.input_std = r.f32();
        if !(self.input_mean.is_finite() && self.input_std.is_finite() && self.input_std > 0.0) {
            return Err(QuantError::InvalidParameter {
                what: "input mean/std",
            });
        }
        self.input = r.qparams("input")?;
        let acts = [
            &mut self.act1,
            &mut self.act2,
            &mut self.act3,
            &mut self.act4,
        ];
        for (a, name) in acts.into_iter().zip(["act1", "act2", "act3", "act4"]) {
            a.pre = r.qparams(name)?;
            a.out = r.qparams(name)?;
        }
        self.logits = r.qparams("logits")?;
        read_conv(&mut r, "conv1", &mut self.conv1)?;
        read_conv(&mut r, "conv2", &mut self.conv2)?;
        read_linear(&mut r, "fc1", &mut self.fc1)?;
        read_linear(&mut r, "fc2", &mut self.fc2)?;
        read_linear(&mut r, "fc3", &mut self.fc3)?;
        for a in [
            &mut self.act1,
            &mut self.act2,
            &mut self.act3,
            &mut self.act4,
        ] {
            r.i8s(&mut a.lut);
        }
        debug_assert_eq!(r.pos, bytes.len() - 4);
        Ok(())
    }

    /// Write the `.q8` encoding into `out`; returns the bytes written,
    /// [`encoded_len`]`(Self::ARCH)`.
    ///
    /// # Errors
    ///
    /// [`QuantError::BufferTooSmall`] if `out` is shorter than that.
    pub fn write_bytes(&self, out: &mut [u8]) -> Result<usize, QuantError> {
        let len = encoded_len(Self::ARCH);
        if out.len() < len {
            return Err(QuantError::BufferTooSmall {
                needed: len,
                len: out.len(),
            });
        }
        let mut w = Writer {
            buf: &mut out[..len],
            pos: 0,
        };
        w.bytes(&MAGIC);
        w.u16(FORMAT_VERSION);
        w.bytes(&[Self::ARCH.code(), self.act.code()]);
        w.u32(len as u32);
        for s in shapes(Self::ARCH) {
            w.u16(s);
        }
        w.f32s(&[self.input_mean, self.input_std]);
        w.qparams(self.input);
        for a in [&self.act1, &self.act2, &self.act3, &self.act4] {
            w.qparams(a.pre);
            w.qparams(a.out);
        }
        w.qparams(self.logits);
        let c1 = &self.conv1;
        let c1w = c1.weight.as_flattened().as_flattened().as_flattened();
        w.layer(c1w, &c1.weight_scale, &c1.bias, &c1.multiplier, &c1.shift);
        let c2 = &self.conv2;
        let c2w = c2.weight.as_flattened().as_flattened().as_flattened();
        w.layer(c2w, &c2.weight_scale, &c2.bias, &c2.multiplier, &c2.shift);
        let f1 = &self.fc1;
        w.layer(
            f1.weight.as_flattened(),
            &f1.weight_scale,
            &f1.bias,
            &f1.multiplier,
            &f1.shift,
        );
        let f2 = &self.fc2;
        w.layer(
            f2.weight.as_flattened(),
            &f2.weight_scale,
            &f2.bias,
            &f2.multiplier,
            &f2.shift,
        );
        let f3 = &self.fc3;
        w.layer(
            f3.weight.as_flattened(),
            &f3.weight_scale,
            &f3.bias,
            &f3.multiplier,
            &f3.shift,
        );
        for a in [&self.act1, &self.act2, &self.act3, &self.act4] {
            w.i8s(&a.lut);
        }
        let crc = crc32(&w.buf[..w.pos]);
        w.u32(crc);
        debug_assert_eq!(w.pos, len);
        Ok(len)
    }
}
