//! The kernels one at a time against lenet-core's golden op records
//! (`tests/golden/ops.bin`, PyTorch): convolution forward, input and weight
//! gradients; max and average pooling forward and backward; linear forward,
//! input and weight gradients; bilinear resizing forward and backward. Each
//! record group runs with the argument structs the trainer builds
//! ([`conv_dims`], [`pool_dims`], [`upsample_dims`]) and the same launch
//! calls (one thread per output, one block per weight-gradient row), on
//! non-square inputs, kernels, strides and padding wherever the kernels
//! take them: the kernels take one size, stride and padding for both axes
//! (what the layer lists use), so a record with a different height and
//! width of those is listed as not applicable, never silently passed.

use super::args::{ConvArgs, LinearArgs, PoolArgs, UpsampleArgs};
use super::device::{DevPtr, Device, DeviceExt, Kernel};
use super::{
    GemmTile, conv_dims, conv_grid, int, linear_grid, pool_dims, upsample_dims, wgrad_splits,
};
use crate::backend::TrainerError;
use crate::golden::{Golden, Worst, compare_record};
use lenet_core::model::Shape3;

/// Convolution outputs and input gradients: sums of up to 150 products of
/// O(1) values, as for lenet-core's own check.
const CONV_TOL: (f32, f32) = (1e-5, 1e-5);
/// Terms a sum may have at [`CONV_TOL`]. A weight or bias gradient sums
/// over the batch and every output pixel (1,568 terms for LeNet's first
/// layer here), and the kernel adds them in a tree, PyTorch in its own
/// order: the rounding of either grows with the number of terms, so the
/// absolute tolerance of those grows in proportion.
const CONV_TERMS: usize = 150;
/// Pooling: one value or a short sum.
const POOL_TOL: (f32, f32) = (1e-6, 1e-5);
/// Linear layers: sums of up to 84 products.
const LINEAR_TOL: (f32, f32) = (1e-5, 1e-5);
/// Bilinear resizing: four taps.
const UPSAMPLE_TOL: (f32, f32) = (1e-6, 1e-5);

/// The outcome of one record group: its worst errors, `None` when the
/// kernels do not take its configuration, or why it failed.
pub type OpResult = Result<Option<Worst>, String>;

/// Device memory for one group, freed when dropped.
struct Buffers<'d, D: Device> {
    dev: &'d mut D,
    ptrs: Vec<DevPtr>,
}

impl<D: Device> Buffers<'_, D> {
    fn put(&mut self, v: &[f32]) -> Result<DevPtr, String> {
        let p = self.zeros(v.len())?;
        self.dev.upload_slice(p, v).map_err(|e| e.to_string())?;
        Ok(p)
    }

    fn zeros(&mut self, n: usize) -> Result<DevPtr, String> {
        let p = self.dev.alloc(n.max(1) * 4).map_err(|e| e.to_string())?;
        self.ptrs.push(p);
        let z = vec![0u8; n.max(1) * 4];
        self.dev.upload(p, &z).map_err(|e| e.to_string())?;
        Ok(p)
    }

    fn get(&mut self, p: DevPtr, n: usize) -> Result<Vec<f32>, String> {
        let mut v = vec![f32::NAN; n];
        self.dev
            .download_slice(&mut v, p)
            .map_err(|e| e.to_string())?;
        Ok(v)
    }

    fn run(&mut self, f: impl FnOnce(&mut D) -> Result<(), TrainerError>) -> Result<(), String> {
        f(self.dev).map_err(|e| e.to_string())
    }
}

impl<D: Device> Drop for Buffers<'_, D> {
    fn drop(&mut self) {
        for p in self.ptrs.drain(..) {
            let _ = self.dev.free(p);
        }
    }
}

fn cfg(g: &Golden, p: &str) -> Result<Vec<usize>, String> {
    Ok(g.record(&format!("{p}/cfg"))?
        .data
        .iter()
        .map(|&v| v as usize)
        .collect())
}

fn data<'g>(g: &'g Golden, p: &str, part: &str) -> Result<&'g [f32], String> {
    Ok(&g.record(&format!("{p}/{part}"))?.data)
}

fn conv<D: Device>(dev: &mut D, g: &Golden, p: &str) -> OpResult {
    let [n, ci, co, h, w, kh, kw, ph, pw, sh, sw, bias] = cfg(g, p)?[..] else {
        return Err(format!("{p}/cfg: not 12 fields"));
    };
    if kh != kw || ph != pw || sh != sw {
        return Ok(None);
    }
    let (k, pad, s) = (kh, ph, sh);
    let a = Shape3 { c: ci, h, w };
    let b = Shape3 {
        c: co,
        h: (h + 2 * pad - k) / s + 1,
        w: (w + 2 * pad - k) / s + 1,
    };
    let mut m = Buffers { dev, ptrs: vec![] };
    let x = m.put(data(g, p, "x")?)?;
    let wt = m.put(data(g, p, "w")?)?;
    let bv = if bias == 1 {
        m.put(data(g, p, "b")?)?
    } else {
        m.zeros(co)?
    };
    let dy = m.put(data(g, p, "dy")?)?;
    let (y, dx, dw, db) = (
        m.zeros(n * b.len())?,
        m.zeros(n * a.len())?,
        m.zeros(co * ci * k * k)?,
        m.zeros(co)?,
    );
    let dims = conv_dims(n, a, b, k, s, pad, 0);
    let fwd = ConvArgs {
        x,
        w: wt,
        b: bv,
        y,
        ..dims
    };
    let wgrad = ConvArgs {
        x,
        dy,
        dw,
        db,
        ..dims
    };
    let igrad = ConvArgs {
        x,
        w: wt,
        dy,
        dx,
        ..dims
    };
    let grid = |kernel| u32::try_from(conv_grid(kernel, n, a, b, k)).map_err(|e| e.to_string());
    // The direct kernels of each pass, then the GEMMs in both tile
    // configurations, whichever the schedule would choose.
    let direct = [
        (Kernel::Conv2dForward, &fwd),
        (Kernel::Conv2dBackwardWeight, &wgrad),
        (Kernel::Conv2dBackwardInput, &igrad),
    ]
    .into_iter()
    .map(|(kernel, args)| Ok((kernel, grid(kernel)?, *args)))
    .collect::<Result<Vec<_>, String>>()?;
    m.run(|d| {
        for (kernel, blocks, args) in direct {
            d.launch(kernel, blocks, &args)?;
        }
        Ok(())
    })?;
    let (atol, rtol) = CONV_TOL;
    let reduce = atol * (n * b.h * b.w).div_ceil(CONV_TERMS) as f32;
    let kdim = ci * k * k;
    let mut worst = Worst::default();
    for (tile, [fwd_k, wgrad_k, igrad_k]) in [
        (
            GemmTile::Small,
            [
                Kernel::Conv2dForwardGemm,
                Kernel::Conv2dBackwardWeightGemm,
                Kernel::Conv2dBackwardInputGemm,
            ],
        ),
        (
            GemmTile::Large,
            [
                Kernel::Conv2dForwardGemmLarge,
                Kernel::Conv2dBackwardWeightGemmLarge,
                Kernel::Conv2dBackwardInputGemmLarge,
            ],
        ),
    ] {
        // The weight gradient as a split GEMM and its reduction.
        let splits = wgrad_splits(tile, co, kdim);
        let (yg, dxg, dwg, dbg, work) = (
            m.zeros(n * b.len())?,
            m.zeros(n * a.len())?,
            m.zeros(co * kdim)?,
            m.zeros(co)?,
            m.zeros(splits * co * kdim)?,
        );
        let fwd_gemm = ConvArgs { y: yg, ..fwd };
        let igrad_gemm = ConvArgs { dx: dxg, ..igrad };
        let wgrad_gemm = ConvArgs {
            y: work,
            dw: dwg,
            db: dbg,
            splits: int(splits),
            ..wgrad
        };
        let launches = [
            (fwd_k, fwd_gemm),
            (wgrad_k, wgrad_gemm),
            (Kernel::Conv2dBackwardWeightReduce, wgrad_gemm),
            // (the input-gradient GEMM takes stride 1 only)
            (igrad_k, igrad_gemm),
        ]
        .into_iter()
        .filter(|&(kernel, _)| s == 1 || kernel != igrad_k)
        .map(|(kernel, args)| Ok((kernel, grid(kernel)?, args)))
        .collect::<Result<Vec<_>, String>>()?;
        m.run(|d| {
            for (kernel, blocks, args) in launches {
                d.launch(kernel, blocks, &args)?;
            }
            Ok(())
        })?;
        let got = m.get(yg, n * b.len())?;
        worst = worst.max(
            compare_record(&got, g.record(&format!("{p}/y"))?, atol, rtol)
                .map_err(|e| format!("{}: {e}", fwd_k.name()))?,
        );
        let mut gemm_parts = vec![("dw", dwg, co * kdim)];
        if s == 1 {
            let got = m.get(dxg, n * a.len())?;
            worst = worst.max(
                compare_record(&got, g.record(&format!("{p}/dx"))?, atol, rtol)
                    .map_err(|e| format!("{}: {e}", igrad_k.name()))?,
            );
        }
        if bias == 1 {
            gemm_parts.push(("db", dbg, co));
        }
        for (part, ptr, len) in gemm_parts {
            let got = m.get(ptr, len)?;
            worst = worst.max(
                compare_record(
                    &got,
                    g.record(&format!("{p}/{part}"))?,
                    reduce.max(atol),
                    rtol,
                )
                .map_err(|e| format!("{}: {e}", wgrad_k.name()))?,
            );
        }
    }
    let mut parts = vec![
        ("y", y, n * b.len(), atol),
        ("dx", dx, n * a.len(), atol),
        ("dw", dw, co * ci * k * k, reduce.max(atol)),
    ];
    if bias == 1 {
        parts.push(("db", db, co, reduce.max(atol)));
    }
    for (part, ptr, len, atol) in parts {
        let got = m.get(ptr, len)?;
        worst = worst.max(compare_record(
            &got,
            g.record(&format!("{p}/{part}"))?,
            atol,
            rtol,
        )?);
    }
    Ok(Some(worst))
}

fn pool<D: Device>(dev: &mut D, g: &Golden, p: &str, max: bool) -> OpResult {
    let [n, c, h, w, kh, kw, ph, pw, sh, sw] = cfg(g, p)?[..] else {
        return Err(format!("{p}/cfg: not 10 fields"));
    };
    if kh != kw || sh != sw || ph != 0 || pw != 0 {
        return Ok(None);
    }
    let (k, s) = (kh, sh);
    let a = Shape3 { c, h, w };
    let b = Shape3 {
        c,
        h: (h - k) / s + 1,
        w: (w - k) / s + 1,
    };
    let mut m = Buffers { dev, ptrs: vec![] };
    let x = m.put(data(g, p, "x")?)?;
    let dy = m.put(data(g, p, "dy")?)?;
    let (y, arg, dx) = (
        m.zeros(n * b.len())?,
        m.zeros(n * b.len())?,
        m.zeros(n * a.len())?,
    );
    let dims = pool_dims(n, a, b, k, s, max, 0);
    let fwd = PoolArgs { x, y, arg, ..dims };
    let bwd = PoolArgs {
        x,
        arg,
        dy,
        dx,
        ..dims
    };
    m.run(|d| {
        d.launch_over(Kernel::PoolForward, n * b.len(), &fwd)?;
        d.launch_over(Kernel::PoolBackward, n * a.len(), &bwd)
    })?;
    let (atol, rtol) = POOL_TOL;
    let got = m.get(y, n * b.len())?;
    let mut worst = compare_record(&got, g.record(&format!("{p}/y"))?, atol, rtol)?;
    if max {
        let mut idx = vec![0i32; n * b.len()];
        m.dev
            .download_slice(&mut idx, arg)
            .map_err(|e| e.to_string())?;
        let idx: Vec<f32> = idx.iter().map(|&i| i as f32).collect();
        worst = worst.max(compare_record(
            &idx,
            g.record(&format!("{p}/argmax"))?,
            0.0,
            0.0,
        )?);
    }
    let got = m.get(dx, n * a.len())?;
    worst = worst.max(compare_record(
        &got,
        g.record(&format!("{p}/dx"))?,
        atol,
        rtol,
    )?);
    Ok(Some(worst))
}

fn linear<D: Device>(dev: &mut D, g: &Golden, p: &str) -> OpResult {
    let [n, fi, fo, bias] = cfg(g, p)?[..] else {
        return Err(format!("{p}/cfg: not 4 fields"));
    };
    let mut m = Buffers { dev, ptrs: vec![] };
    let x = m.put(data(g, p, "x")?)?;
    let wt = m.put(data(g, p, "w")?)?;
    let bv = if bias == 1 {
        m.put(data(g, p, "b")?)?
    } else {
        m.zeros(fo)?
    };
    let dy = m.put(data(g, p, "dy")?)?;
    let (y, dx, dw, db) = (
        m.zeros(n * fo)?,
        m.zeros(n * fi)?,
        m.zeros(fo * fi)?,
        m.zeros(fo)?,
    );
    let dims = LinearArgs {
        n: int(n),
        f_in: int(fi),
        f_out: int(fo),
        ..LinearArgs::default()
    };
    let fwd = LinearArgs {
        x,
        w: wt,
        b: bv,
        y,
        ..dims
    };
    let wgrad = LinearArgs {
        x,
        dy,
        dw,
        db,
        ..dims
    };
    let igrad = LinearArgs {
        x,
        w: wt,
        dy,
        dx,
        ..dims
    };
    // Every pass in both tile configurations, whichever the schedule
    // would choose, into the same outputs (each pass writes, does not
    // accumulate): checked after each.
    let (atol, rtol) = LINEAR_TOL;
    let mut worst = Worst::default();
    for kernels in [
        [
            Kernel::LinearForward,
            Kernel::LinearBackwardWeight,
            Kernel::LinearBackwardInput,
        ],
        [
            Kernel::LinearForwardLarge,
            Kernel::LinearBackwardWeightLarge,
            Kernel::LinearBackwardInputLarge,
        ],
    ] {
        m.run(|d| {
            for (k, args) in kernels.into_iter().zip([&fwd, &wgrad, &igrad]) {
                let kind = d.kind();
                let grid =
                    u32::try_from(linear_grid(k, n, fi, fo)).map_err(|e| TrainerError::Device {
                        device: kind,
                        msg: e.to_string(),
                    })?;
                d.launch(k, grid, args)?;
            }
            Ok(())
        })?;
        let mut parts = vec![
            ("y", y, n * fo, kernels[0]),
            ("dx", dx, n * fi, kernels[2]),
            ("dw", dw, fo * fi, kernels[1]),
        ];
        if bias == 1 {
            parts.push(("db", db, fo, kernels[1]));
        }
        for (part, ptr, len, kernel) in parts {
            let got = m.get(ptr, len)?;
            worst = worst.max(
                compare_record(&got, g.record(&format!("{p}/{part}"))?, atol, rtol)
                    .map_err(|e| format!("{}: {e}", kernel.name()))?,
            );
        }
        // (the next configuration's outputs must not be these)
        for (ptr, len) in [(y, n * fo), (dx, n * fi), (dw, fo * fi), (db, fo)] {
            m.dev
                .upload_slice(ptr, &vec![f32::NAN; len])
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(Some(worst))
}

fn upsample<D: Device>(dev: &mut D, g: &Golden, p: &str) -> OpResult {
    let [n, c, h, w, oh, ow] = cfg(g, p)?[..] else {
        return Err(format!("{p}/cfg: not 6 fields"));
    };
    let a = Shape3 { c, h, w };
    let b = Shape3 { c, h: oh, w: ow };
    let mut m = Buffers { dev, ptrs: vec![] };
    let x = m.put(data(g, p, "x")?)?;
    let dy = m.put(data(g, p, "dy")?)?;
    let (y, dx) = (m.zeros(n * b.len())?, m.zeros(n * a.len())?);
    let fwd = UpsampleArgs {
        x,
        y,
        ..upsample_dims(n, a, b, 0)
    };
    let bwd = UpsampleArgs {
        x,
        dy,
        dx,
        ..upsample_dims(n, a, b, 0)
    };
    m.run(|d| {
        d.launch_over(Kernel::UpsampleForward, n * b.len(), &fwd)?;
        d.launch_over(Kernel::UpsampleBackward, n * a.len(), &bwd)
    })?;
    let (atol, rtol) = UPSAMPLE_TOL;
    let got = m.get(y, n * b.len())?;
    let mut worst = compare_record(&got, g.record(&format!("{p}/y"))?, atol, rtol)?;
    let got = m.get(dx, n * a.len())?;
    worst = worst.max(compare_record(
        &got,
        g.record(&format!("{p}/dx"))?,
        atol,
        rtol,
    )?);
    Ok(Some(worst))
}

/// Every op record group of `ops.bin` that these kernels compute, on
/// `dev`, each passed to `report` as `(group, outcome)` when done.
///
/// # Errors
/// None of its own: a failing group is an outcome.
pub fn check<D: Device>(dev: &mut D, g: &Golden, report: &mut dyn FnMut(&str, &OpResult)) {
    type Run<D> = fn(&mut D, &Golden, &str) -> OpResult;
    let families: [(&str, Run<D>); 5] = [
        ("conv2d", conv),
        ("max_pool2d", |d, g, p| pool(d, g, p, true)),
        ("avg_pool2d", |d, g, p| pool(d, g, p, false)),
        ("linear", linear),
        ("upsample", upsample),
    ];
    for (family, run) in families {
        for c in g.children(family) {
            let p = format!("{family}/{c}");
            let r = run(dev, g, &p);
            report(&p, &r);
        }
    }
}

#[cfg(all(test, feature = "cuda-emu"))]
mod tests {
    use super::*;
    use crate::backend::gpu::emu::{EmuDevice, ThreadOrder};

    /// Every op group the kernels take passes on the emulated device, the
    /// non-square ones included; only the groups with a different height
    /// and width of kernel, stride or padding are left out, and they are
    /// few and named.
    #[test]
    fn op_records_pass_on_the_emulated_device() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/ops.bin");
        let g = Golden::read(&path).unwrap();
        let mut dev = EmuDevice::new(ThreadOrder::Shuffled(3)).unwrap();
        let (mut ok, mut skipped) = (Vec::new(), Vec::new());
        check(&mut dev, &g, &mut |p, r| match r {
            Ok(Some(_)) => ok.push(p.to_owned()),
            Ok(None) => skipped.push(p.to_owned()),
            Err(e) => panic!("{e}"),
        });
        assert_eq!(ok.len(), 27, "{ok:?}");
        for must in [
            "conv2d/pad_multi",
            "conv2d/k11_s4_p1",
            "max_pool2d/w3_s2_overlap",
            "avg_pool2d/w3_s1_overlap",
            "upsample/nonsquare",
            "linear/i16_o1_nobias",
        ] {
            assert!(ok.iter().any(|p| p == must), "{must} not checked: {ok:?}");
        }
        assert_eq!(
            skipped,
            [
                "conv2d/nonsquare",
                "conv2d/uneven_stride",
                "max_pool2d/w3_s2_p1",
                "max_pool2d/nonsquare",
                "max_pool2d/floor_tail",
                "avg_pool2d/w3_s2_p1",
                "avg_pool2d/nonsquare",
                "avg_pool2d/floor_tail",
            ]
        );
    }

    /// A wrong kernel is caught: the records of one group against another
    /// group's shapes fail, naming the record.
    #[test]
    fn a_wrong_result_fails_naming_the_record() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/ops.bin");
        let mut g = Golden::read(&path).unwrap();
        let r = g
            .records
            .iter_mut()
            .find(|r| r.name == "conv2d/pad_multi/dw")
            .unwrap();
        r.data[3] += 1e-3;
        let r = g
            .records
            .iter_mut()
            .find(|r| r.name == "linear/i84_o10/y")
            .unwrap();
        r.data[7] += 1e-4;
        let mut dev = EmuDevice::new(ThreadOrder::Ascending).unwrap();
        let e = conv(&mut dev, &g, "conv2d/pad_multi").unwrap_err();
        assert!(
            e.contains("conv2d/pad_multi/dw") && e.contains("index 3"),
            "{e}"
        );
        let e = linear(&mut dev, &g, "linear/i84_o10").unwrap_err();
        assert!(
            e.contains("linear/i84_o10/y") && e.contains("index 7"),
            "{e}"
        );
    }
}
