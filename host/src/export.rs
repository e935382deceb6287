//! safetensors export and import with PyTorch `state_dict` names and shapes.
//!
//! The tensors are named and shaped as the `state_dict` of the PyTorch
//! `nn.Sequential` that [`pytorch_snippet`] prints (`0.weight` `[6,1,5,5]`,
//! `0.bias`, `3.*`, `7.*`, `9.*`, `11.*`), so
//! `net.load_state_dict(safetensors.torch.load_file(path))` loads them as is.
//! The file's metadata records the model kind, activation and input
//! normalization (`lenet.model`, `lenet.activation`, `lenet.norm_mean`,
//! `lenet.norm_std`) so an import restores the same model file bit for bit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lenet_core::activation::Activation;
use lenet_core::model::{ModelKind, PARAM_NAMES};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::data::Normalization;
use crate::fsutil::write_atomic;
use crate::modelfile::{
    ModelFile, ModelMeta, act_name, expected_params, kind_name, parse_act, parse_kind,
};

/// Export / import failure, naming the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Read or write failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not a valid safetensors file, or not a LeNet-5 `state_dict`.
    #[error("{path}: {msg}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
}

/// `(name, shape)` of every tensor of `kind`, `state_dict` order.
pub fn state_dict_layout(kind: ModelKind) -> Vec<(&'static str, Vec<usize>)> {
    PARAM_NAMES
        .into_iter()
        .zip(kind.shapes())
        .map(|(name, shape)| (name, shape.to_vec()))
        .collect()
}

/// Largest safetensors file read by [`import_safetensors`] (the largest
/// LeNet `state_dict` is 344 KB).
pub const MAX_SAFETENSORS_LEN: u64 = 16 << 20;

/// The PyTorch module whose `state_dict` matches the export, and the input
/// normalization the weights expect, so the snippet reproduces the model's
/// accuracy when pasted.
pub fn pytorch_snippet(kind: ModelKind, act: Activation, norm: Normalization) -> String {
    let a = match act {
        Activation::Sigmoid => "nn.Sigmoid()",
        Activation::Relu => "nn.ReLU()",
        Activation::Tanh => "nn.Tanh()",
    };
    let (n1, n2) = kind.channels();
    let (pad, pool, side) = if kind.is_max_pool() {
        ("", "nn.MaxPool2d(kernel_size=2, stride=2)", 4)
    } else {
        (", padding=2", "nn.AvgPool2d(kernel_size=2, stride=2)", 5)
    };
    let flat = format!("{n2} * {side} * {side}");
    format!(
        "import torch\nfrom torch import nn\nfrom torchvision import transforms\nfrom safetensors.torch import load_file\n\n\
         net = nn.Sequential(\n    nn.Conv2d(1, {n1}, kernel_size=5{pad}), {a},\n    {pool},\n    \
         nn.Conv2d({n1}, {n2}, kernel_size=5), {a},\n    {pool},\n    nn.Flatten(),\n    \
         nn.Linear({flat}, 120), {a},\n    nn.Linear(120, 84), {a},\n    nn.Linear(84, 10))\n\
         net.load_state_dict(load_file(\"model.safetensors\"))\n\n\
         # Inputs: N x 1 x 28 x 28, pixels p in 0..255, light garment on black,\n\
         # normalized as the model was trained:\n\
         # x = (p / 255 - {mean:?}) / {std:?}\n\
         preprocess = transforms.Compose([transforms.ToTensor(), transforms.Normalize(({mean:?},), ({std:?},))])\n",
        mean = norm.mean,
        std = norm.std,
    )
}

/// Serializes a model file's weights as safetensors bytes.
///
/// # Errors
/// A parameter count that does not fit the model kind.
pub fn to_safetensors(path: &Path, m: &ModelFile) -> Result<Vec<u8>, ExportError> {
    let fmt = |msg: String| ExportError::Format {
        path: path.to_owned(),
        msg,
    };
    let layout = state_dict_layout(m.meta.kind);
    let total: usize = layout
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    if total != m.params.len() {
        return Err(fmt(format!(
            "{} parameters, layout needs {total}",
            m.params.len()
        )));
    }
    let bytes: Vec<u8> = m.params.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut views = Vec::new();
    let mut at = 0;
    for (name, shape) in layout {
        let n = shape.iter().product::<usize>() * 4;
        let v = TensorView::new(Dtype::F32, shape, &bytes[at..at + n])
            .map_err(|e| fmt(e.to_string()))?;
        views.push((name, v));
        at += n;
    }
    let meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (
            "lenet.model".to_string(),
            kind_name(m.meta.kind).to_string(),
        ),
        (
            "lenet.activation".to_string(),
            act_name(m.meta.act).to_string(),
        ),
        (
            "lenet.norm_mean".to_string(),
            format!("{:?}", m.meta.norm.mean),
        ),
        (
            "lenet.norm_std".to_string(),
            format!("{:?}", m.meta.norm.std),
        ),
    ]);
    safetensors::serialize(views, Some(meta)).map_err(|e| fmt(e.to_string()))
}

/// Writes `m` to `path` as safetensors (atomically).
///
/// # Errors
/// See [`to_safetensors`]; I/O errors.
pub fn export_safetensors(path: &Path, m: &ModelFile) -> Result<(), ExportError> {
    let b = to_safetensors(path, m)?;
    write_atomic(path, &b).map_err(|source| ExportError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Parses safetensors bytes holding a LeNet-5 `state_dict`. Kind comes from
/// the metadata or, failing that, from the shape of `7.weight`; activation
/// and normalization from the arguments when given, else from the metadata.
/// A file without that metadata (`safetensors.torch.save_file` of a
/// `state_dict` writes none) needs both given: the weights alone do not say
/// which activation or input scaling they were trained with, and a wrong
/// guess loses most of the accuracy silently.
///
/// # Errors
/// Malformed file, missing or extra tensors, wrong dtype or shape, NaN.
pub fn from_safetensors(
    path: &Path,
    bytes: &[u8],
    act: Option<Activation>,
    norm: Option<Normalization>,
) -> Result<ModelFile, ExportError> {
    let fmt = |msg: String| ExportError::Format {
        path: path.to_owned(),
        msg,
    };
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| fmt(format!("not a safetensors file: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| fmt(e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let kind = match meta.get("lenet.model") {
        Some(k) => parse_kind(k).ok_or_else(|| fmt(format!("unknown lenet.model `{k}`")))?,
        None => {
            let w = st
                .tensor("7.weight")
                .map_err(|_| fmt("no tensor `7.weight`".into()))?;
            match w.shape() {
                [120, 400] => ModelKind::LeNet5,
                [120, 256] => ModelKind::LeNet5Max,
                [120, 512] => ModelKind::LeNet5Wide,
                s => {
                    return Err(fmt(format!(
                        "7.weight has shape {s:?}, expected [120, 400], [120, 256] or [120, 512]"
                    )));
                }
            }
        }
    };
    let act = match (act, meta.get("lenet.activation")) {
        (Some(a), _) => a,
        (None, Some(a)) => {
            parse_act(a).ok_or_else(|| fmt(format!("unknown lenet.activation `{a}`")))?
        }
        (None, None) => {
            return Err(fmt(
                "the file does not record the activation (no `lenet.activation` metadata): \
                 give it with --act sigmoid|relu|tanh, and the input normalization with \
                 --normalize unit|standard"
                    .into(),
            ));
        }
    };
    let norm = match norm {
        Some(n) => n,
        None => {
            let get = |k: &str| -> Result<f32, ExportError> {
                let v = meta.get(k).ok_or_else(|| {
                    fmt(format!(
                        "the file does not record the input normalization (no `{k}` metadata): \
                         give it with --normalize unit|standard"
                    ))
                })?;
                v.parse::<f32>()
                    .map_err(|_| fmt(format!("{k} = `{v}` is not a number")))
            };
            let n = Normalization {
                mean: get("lenet.norm_mean")?,
                std: get("lenet.norm_std")?,
            };
            if !n.is_valid() {
                return Err(fmt(format!(
                    "invalid normalization in the metadata: mean {} / std {} \
                     (mean finite, std in [1e-4, 1e4])",
                    n.mean, n.std
                )));
            }
            n
        }
    };
    let layout = state_dict_layout(kind);
    let mut params = Vec::with_capacity(expected_params(kind));
    for (name, shape) in &layout {
        let t = st
            .tensor(name)
            .map_err(|_| fmt(format!("missing tensor `{name}`")))?;
        if t.dtype() != Dtype::F32 {
            return Err(fmt(format!("`{name}` is {:?}, expected F32", t.dtype())));
        }
        if t.shape() != shape.as_slice() {
            return Err(fmt(format!(
                "`{name}` has shape {:?}, expected {shape:?}",
                t.shape()
            )));
        }
        params.extend(
            t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
    }
    if st.len() != layout.len() {
        let mut extra: Vec<&str> = st
            .names()
            .into_iter()
            .filter(|n| !layout.iter().any(|(l, _)| l == n))
            .collect();
        extra.sort_unstable();
        return Err(fmt(format!("unexpected tensors {extra:?}")));
    }
    if let Some(i) = params.iter().position(|v| !v.is_finite()) {
        return Err(fmt(format!("parameter {i} is {}", params[i])));
    }
    Ok(ModelFile {
        meta: ModelMeta { kind, act, norm },
        params,
        checkpoint: None,
    })
}

/// Reads a safetensors file; see [`from_safetensors`].
///
/// # Errors
/// As [`from_safetensors`], plus I/O errors.
pub fn import_safetensors(
    path: &Path,
    act: Option<Activation>,
    norm: Option<Normalization>,
) -> Result<ModelFile, ExportError> {
    let b = crate::fsutil::read_capped(path, MAX_SAFETENSORS_LEN).map_err(|source| {
        ExportError::Io {
            path: path.to_owned(),
            source,
        }
    })?;
    from_safetensors(path, &b, act, norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(kind: ModelKind) -> ModelFile {
        ModelFile {
            meta: ModelMeta {
                kind,
                act: Activation::Tanh,
                norm: Normalization::STANDARD,
            },
            params: (0..expected_params(kind))
                .map(|i| (i as f32).sqrt() * 1e-3 - 0.1)
                .collect(),
            checkpoint: None,
        }
    }

    #[test]
    fn pytorch_snippet_carries_the_normalization() {
        let s = pytorch_snippet(ModelKind::LeNet5, Activation::Relu, Normalization::STANDARD);
        assert!(
            s.contains("transforms.Normalize((0.286,), (0.353,))"),
            "{s}"
        );
        assert!(s.contains("x = (p / 255 - 0.286) / 0.353"), "{s}");
        let s = pytorch_snippet(ModelKind::LeNet5, Activation::Relu, Normalization::UNIT);
        assert!(s.contains("transforms.Normalize((0.0,), (1.0,))"), "{s}");
    }

    #[test]
    fn layout_matches_parameter_counts() {
        for kind in ModelKind::ALL {
            let n: usize = state_dict_layout(kind)
                .iter()
                .map(|(_, s)| s.iter().product::<usize>())
                .sum();
            assert_eq!(n, expected_params(kind));
        }
    }

    #[test]
    fn round_trip_is_exact() {
        let d = tempfile::tempdir().unwrap();
        for kind in ModelKind::ALL {
            let m = model(kind);
            let p = d.path().join("m.safetensors");
            export_safetensors(&p, &m).unwrap();
            let back = import_safetensors(&p, None, None).unwrap();
            assert_eq!(back, m);
            // Names and shapes as PyTorch writes them.
            let bytes = std::fs::read(&p).unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            let (n1, n2) = kind.channels();
            assert_eq!(st.tensor("0.weight").unwrap().shape(), &[n1, 1, 5, 5]);
            assert_eq!(st.tensor("3.weight").unwrap().shape(), &[n2, n1, 5, 5]);
            assert_eq!(st.tensor("11.bias").unwrap().shape(), &[10]);
            let first = st.tensor("0.weight").unwrap().data()[..4].to_vec();
            assert_eq!(f32::from_le_bytes(first.try_into().unwrap()), m.params[0]);
        }
    }

    #[test]
    fn foreign_file_without_metadata_infers_kind() {
        let m = model(ModelKind::LeNet5Max);
        let bytes: Vec<u8> = m.params.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut views = Vec::new();
        let mut at = 0;
        for (name, shape) in state_dict_layout(m.meta.kind) {
            let n = shape.iter().product::<usize>() * 4;
            views.push((
                name,
                TensorView::new(Dtype::F32, shape, &bytes[at..at + n]).unwrap(),
            ));
            at += n;
        }
        let b = safetensors::serialize(views, None).unwrap();
        let p = Path::new("f.safetensors");
        let got =
            from_safetensors(p, &b, Some(Activation::Relu), Some(Normalization::STANDARD)).unwrap();
        assert_eq!(got.meta.kind, ModelKind::LeNet5Max);
        assert_eq!(got.meta.act, Activation::Relu);
        assert_eq!(got.meta.norm, Normalization::STANDARD);
        assert_eq!(got.params, m.params);
        // Without the metadata, activation and normalization must be given.
        let e = from_safetensors(p, &b, None, Some(Normalization::UNIT))
            .unwrap_err()
            .to_string();
        assert!(e.contains("f.safetensors") && e.contains("--act"), "{e}");
        let e = from_safetensors(p, &b, Some(Activation::Relu), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--normalize"), "{e}");
    }

    #[test]
    fn rejects_bad_files_naming_them() {
        let p = Path::new("x.safetensors");
        let e = from_safetensors(p, b"garbage", None, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.safetensors") && e.contains("not a safetensors"),
            "{e}"
        );

        let data = vec![0u8; 16];
        let v = TensorView::new(Dtype::F32, vec![4], &data).unwrap();
        let b = safetensors::serialize([("7.weight", v)], None).unwrap();
        let e = from_safetensors(p, &b, None, None).unwrap_err().to_string();
        assert!(e.contains("7.weight has shape [4]"), "{e}");

        // Wrong shape of one tensor.
        let mut m = model(ModelKind::LeNet5);
        let good = to_safetensors(p, &m).unwrap();
        let mut bad = good.clone();
        let at = good
            .windows(8)
            .position(|w| w == b"[84,120]")
            .expect("shape in header");
        bad[at..at + 8].copy_from_slice(b"[120,84]");
        let e = from_safetensors(p, &bad, None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`9.weight` has shape [120, 84]"), "{e}");

        // Normalization metadata that would write an unusable model.
        for (mean, std) in [
            ("0", "0"),
            ("0", "-1"),
            ("NaN", "1"),
            ("0", "inf"),
            ("x", "1"),
        ] {
            let bytes: Vec<u8> = m.params.iter().flat_map(|x| x.to_le_bytes()).collect();
            let mut views = Vec::new();
            let mut at = 0;
            for (name, shape) in state_dict_layout(m.meta.kind) {
                let n = shape.iter().product::<usize>() * 4;
                views.push((
                    name,
                    TensorView::new(Dtype::F32, shape, &bytes[at..at + n]).unwrap(),
                ));
                at += n;
            }
            let meta = HashMap::from([
                ("lenet.activation".to_string(), "relu".to_string()),
                ("lenet.norm_mean".to_string(), mean.to_string()),
                ("lenet.norm_std".to_string(), std.to_string()),
            ]);
            let b = safetensors::serialize(views, Some(meta)).unwrap();
            let e = from_safetensors(p, &b, None, None).unwrap_err().to_string();
            assert!(e.contains("x.safetensors") && e.contains("norm"), "{e}");
        }

        // NaN weight.
        m.params[3] = f32::NAN;
        let b = to_safetensors(p, &m).unwrap();
        let e = from_safetensors(p, &b, None, None).unwrap_err().to_string();
        assert!(e.contains("parameter 3 is NaN"), "{e}");
    }
}
