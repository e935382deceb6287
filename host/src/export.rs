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
use lenet_core::model::{Arch, FAMILIES, Family, Layer, NetOption, Plan};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::data::Normalization;
use crate::fsutil::write_atomic;
use crate::modelfile::{
    ModelFile, ModelMeta, NetOptions, act_name, arch_from, expected_params, parse_act,
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

/// `(name, shape)` of every tensor of `arch`, `state_dict` order: the
/// weight and bias of each layer with parameters, named by its index in the
/// `nn.Sequential` (linear weights are `[out, in]`).
pub fn state_dict_layout(arch: impl Into<Arch>) -> Vec<(String, Vec<usize>)> {
    // (An arch that cannot be planned has no tensors; every arch read from
    // a file or the command line is checked before it gets here.)
    Plan::new(arch.into())
        .map(|p| {
            p.tensors()
                .map(|t| (t.name.to_string(), t.shape[..t.dims].to_vec()))
                .collect()
        })
        .unwrap_or_default()
}

/// Largest safetensors file read by [`import_safetensors`]: 1 GiB, which
/// holds the notes' full VGG-11 (128.8 M parameters, 515 MB).
pub const MAX_SAFETENSORS_LEN: u64 = 1 << 30;

/// The PyTorch module of one layer, as `nn.Sequential` takes it (`act` for
/// [`Layer::Act`]).
pub fn torch_layer(l: Layer, act: &str) -> String {
    match l {
        Layer::Conv2d {
            in_channels,
            out_channels,
            kernel,
            padding,
            stride,
        } => {
            let mut s = format!("nn.Conv2d({in_channels}, {out_channels}, kernel_size={kernel}");
            if stride != 1 {
                s += &format!(", stride={stride}");
            }
            if padding != 0 {
                s += &format!(", padding={padding}");
            }
            s + ")"
        }
        Layer::Act => act.to_string(),
        Layer::AvgPool2d { kernel, stride } => {
            format!("nn.AvgPool2d(kernel_size={kernel}, stride={stride})")
        }
        Layer::MaxPool2d { kernel, stride } => {
            format!("nn.MaxPool2d(kernel_size={kernel}, stride={stride})")
        }
        Layer::Flatten => "nn.Flatten()".into(),
        Layer::Linear {
            in_features,
            out_features,
        } => format!("nn.Linear({in_features}, {out_features})"),
        Layer::Dropout { p } => format!("nn.Dropout(p={p:?})"),
        Layer::Upsample { h, w } => {
            format!("nn.Upsample(size=({h}, {w}), mode=\"bilinear\", align_corners=False)")
        }
        other => format!("# no PyTorch module for {other:?}"),
    }
}

/// The network as a PyTorch `nn.Sequential` expression (needs `nn` in
/// scope): one module per layer, so the indices are the `state_dict` names.
pub fn pytorch_module(arch: impl Into<Arch>, act: Activation) -> String {
    let a = match act {
        Activation::Sigmoid => "nn.Sigmoid()",
        Activation::Relu => "nn.ReLU()",
        Activation::Tanh => "nn.Tanh()",
    };
    let layers: Vec<String> = arch
        .into()
        .layers()
        .iter()
        .map(|l| format!("    {},\n", torch_layer(*l, a)))
        .collect();
    format!("nn.Sequential(\n{})", layers.concat())
}

/// The PyTorch module whose `state_dict` matches the export, and the input
/// normalization the weights expect, so the snippet reproduces the model's
/// accuracy when pasted.
pub fn pytorch_snippet(arch: impl Into<Arch>, act: Activation, norm: Normalization) -> String {
    format!(
        "import torch\nfrom torch import nn\nfrom torchvision import transforms\nfrom safetensors.torch import load_file\n\n\
         net = {}\n\
         net.load_state_dict(load_file(\"model.safetensors\"))\n\n\
         # Inputs: N x 1 x 28 x 28, pixels p in 0..255, light garment on black,\n\
         # normalized as the model was trained:\n\
         # x = (p / 255 - {mean:?}) / {std:?}\n\
         preprocess = transforms.Compose([transforms.ToTensor(), transforms.Normalize(({mean:?},), ({std:?},))])\n",
        pytorch_module(arch, act),
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
    let layout = state_dict_layout(m.meta.arch);
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
    let mut meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (
            "lenet.model".to_string(),
            m.meta.arch.family().metadata_name.to_string(),
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
    let o = NetOptions::of(m.meta.arch);
    for &opt in m.meta.arch.family().options {
        meta.insert(opt.metadata_key().into(), o.get(opt).to_string());
    }
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| fmt(e.to_string()))?;
    canonical_header(bytes).map_err(fmt)
}

/// Rewrites a safetensors header so the same model always gives the same
/// bytes: the metadata keys sorted (the library writes them in hash-map
/// order, which changes from run to run), then the tensors in data order.
/// The offsets are relative to the data, so only the header's length field
/// changes, padded with spaces to 8 bytes as the format asks.
fn canonical_header(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    use serde_json::Value;
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize)
        .filter(|&n| n.checked_add(8).is_some_and(|e| e <= bytes.len()))
        .ok_or("serialized safetensors header is truncated")?;
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes[8..8 + n]).map_err(|e| e.to_string())?;
    let mut meta: Vec<(&String, &Value)> = Vec::new();
    let mut tensors: Vec<(u64, &String, &Value)> = Vec::new();
    for (k, v) in &header {
        if k == "__metadata__" {
            if let Some(m) = v.as_object() {
                meta = m.iter().collect();
            }
        } else {
            let start = v["data_offsets"][0]
                .as_u64()
                .ok_or("tensor without offsets")?;
            tensors.push((start, k, v));
        }
    }
    meta.sort_by(|a, b| a.0.cmp(b.0));
    tensors.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let key = |k: &str| serde_json::to_string(k).map_err(|e| e.to_string());
    let mut out = String::from("{");
    if !meta.is_empty() {
        out.push_str("\"__metadata__\":{");
        for (i, (k, v)) in meta.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&key(k)?);
            out.push(':');
            out.push_str(&v.to_string());
        }
        out.push('}');
    }
    for (i, (_, k, v)) in tensors.iter().enumerate() {
        if i > 0 || !meta.is_empty() {
            out.push(',');
        }
        out.push_str(&key(k)?);
        out.push(':');
        out.push_str(&v.to_string());
    }
    out.push('}');
    while out.len() % 8 != 0 {
        out.push(' ');
    }
    let mut res = Vec::with_capacity(8 + out.len() + bytes.len() - 8 - n);
    res.extend_from_slice(&(out.len() as u64).to_le_bytes());
    res.extend_from_slice(out.as_bytes());
    res.extend_from_slice(&bytes[8 + n..]);
    Ok(res)
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

/// The network whose `7.weight` has shape `shape`: how a file without
/// `lenet.model` metadata (a plain PyTorch `state_dict`) is recognized.
/// Only the families without options can be told by it; each has its own
/// shape there.
///
/// # Errors
/// A shape no such family has, naming the ones expected.
fn shape_family(shape: &[usize]) -> Result<Arch, String> {
    let plain = FAMILIES.iter().filter(|f| f.options.is_empty());
    let mut known = Vec::new();
    for f in plain {
        let layout = state_dict_layout(f.base);
        if let Some((_, s)) = layout.iter().find(|(n, _)| n == "7.weight") {
            if s == shape {
                return Ok(f.base);
            }
            known.push(format!("{s:?}"));
        }
    }
    let last = known.pop().unwrap_or_default();
    let others: Vec<&str> = FAMILIES
        .iter()
        .filter(|f| !f.options.is_empty())
        .map(|f| f.name)
        .collect();
    Err(format!(
        "has shape {shape:?}, expected {} or {last} (a {} file needs its lenet.* metadata)",
        known.join(", "),
        others.join(" or ")
    ))
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
    // The library keeps the last of two tensors (or metadata keys) of one
    // name; a file that names one twice is ambiguous, so it is refused.
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    if let Some(dup) = duplicate_key(&bytes[8..8 + header_len]) {
        return Err(fmt(format!("{dup} appears twice in the header")));
    }
    let data_len = bytes.len() - 8 - header_len;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| fmt(e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let kind = match meta.get("lenet.model") {
        Some(k) => {
            // Options the named network does not have are refused, as in
            // the model file's header: what the export writes is all there
            // is.
            let family = Family::by_metadata_name(k);
            for opt in NetOption::ALL {
                let key = opt.metadata_key();
                if meta.contains_key(key) && !family.is_some_and(|f| f.takes(opt)) {
                    return Err(fmt(format!(
                        "{key} is given, but lenet.model `{k}` has no such option"
                    )));
                }
            }
            let d = NetOptions::default();
            let num = |key: &str, default: u32| -> Result<u32, ExportError> {
                meta.get(key).map_or(Ok(default), |v| {
                    v.parse::<u32>()
                        .map_err(|_| fmt(format!("{key} = `{v}` is not a whole number")))
                })
            };
            let narrow = |key: &str, v: u32| -> Result<u16, ExportError> {
                u16::try_from(v).map_err(|_| fmt(format!("{key} = {v} is out of range")))
            };
            let o = NetOptions {
                blocks: u8::try_from(num("lenet.blocks", d.blocks.into())?)
                    .map_err(|_| fmt("lenet.blocks is out of range".into()))?,
                width_div: narrow(
                    "lenet.width_div",
                    num("lenet.width_div", d.width_div.into())?,
                )?,
                input_size: narrow(
                    "lenet.input_size",
                    num("lenet.input_size", d.input_size.into())?,
                )?,
                hidden: num("lenet.hidden", d.hidden)?,
            };
            arch_from(family.map_or(k.as_str(), |f| f.name), o)
                .map_err(|e| fmt(format!("lenet.model `{k}`: {e}")))?
        }
        None => {
            let w = st
                .tensor("7.weight")
                .map_err(|_| fmt("no tensor `7.weight`".into()))?;
            shape_family(w.shape()).map_err(|e| fmt(format!("7.weight {e}")))?
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
    // The network named by the metadata must be the one the file holds,
    // checked before its parameters are allocated.
    let want = expected_params(kind);
    if 4 * want as u64 != data_len as u64 {
        return Err(fmt(format!(
            "{kind} has {want} parameters ({} bytes), but the file holds {data_len} bytes of tensors",
            4 * want as u64
        )));
    }
    let layout = state_dict_layout(kind);
    let mut params = Vec::with_capacity(want);
    for (name, shape) in &layout {
        let name = name.as_str();
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
        meta: ModelMeta {
            arch: kind,
            act,
            norm,
        },
        params,
        checkpoint: None,
    })
}

/// The first key of the header's top-level object, or of its
/// `__metadata__`, that appears twice (as `tensor \`NAME\`` or
/// `metadata key \`NAME\``), if any; `None` too for a header that is not
/// JSON (the library reports that).
fn duplicate_key(header: &[u8]) -> Option<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Keys(bool);
    impl<'de> Visitor<'de> for Keys {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut dup = None;
            while let Some(k) = map.next_key::<String>()? {
                if self.0 && k == "__metadata__" {
                    let inner = map.next_value_seed(KeysSeed)?;
                    dup = dup.or(inner);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
                if !seen.insert(k.clone()) && dup.is_none() {
                    dup = Some(if self.0 {
                        format!("tensor `{k}`")
                    } else {
                        format!("metadata key `{k}`")
                    });
                }
            }
            Ok(dup)
        }
    }
    struct KeysSeed;
    impl<'de> serde::de::DeserializeSeed<'de> for KeysSeed {
        type Value = Option<String>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(Keys(false))
        }
    }
    let mut d = serde_json::Deserializer::from_slice(header);
    d.deserialize_map(Keys(true)).ok().flatten()
}

/// Largest safetensors header read: a LeNet's is about 1 KB, the notes'
/// VGG's 2 KB; a `state_dict` with a thousand tensors stays far below.
pub const MAX_SAFETENSORS_HEADER: u64 = 1 << 20;

/// Reads a safetensors file; see [`from_safetensors`]. The header is read
/// first; the file is then read only up to the size it gives (8 bytes, the
/// header, and the end of the last tensor), at most
/// [`MAX_SAFETENSORS_LEN`], checked against the file's size first.
///
/// # Errors
/// As [`from_safetensors`], plus I/O errors.
pub fn import_safetensors(
    path: &Path,
    act: Option<Activation>,
    norm: Option<Normalization>,
) -> Result<ModelFile, ExportError> {
    use std::io::Read;
    let io = |source| ExportError::Io {
        path: path.to_owned(),
        source,
    };
    let fmt = |msg: String| ExportError::Format {
        path: path.to_owned(),
        msg,
    };
    let (mut f, meta) = crate::fsutil::open_input(path).map_err(io)?;
    let mut b = Vec::new();
    (&mut f).take(8).read_to_end(&mut b).map_err(io)?;
    if b.len() < 8 {
        return from_safetensors(path, &b, act, norm);
    }
    let n = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
    if n > MAX_SAFETENSORS_HEADER {
        return Err(fmt(format!(
            "not a safetensors file: its header claims {n} bytes (at most {MAX_SAFETENSORS_HEADER} read)"
        )));
    }
    (&mut f).take(n).read_to_end(&mut b).map_err(io)?;
    // The end of the tensor data the header gives; a header that does not
    // give one is left to the parser to describe.
    let end = serde_json::from_slice::<serde_json::Value>(&b[8..])
        .ok()
        .and_then(|h| {
            h.as_object()?
                .iter()
                .filter(|(k, _)| k.as_str() != "__metadata__")
                .map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
                .try_fold(0u64, |m, e| Some(m.max(e?)))
        });
    let Some(end) = end else {
        return from_safetensors(path, &b, act, norm);
    };
    let total = 8 + n + end;
    if total > MAX_SAFETENSORS_LEN {
        return Err(fmt(format!(
            "its header gives {total} bytes, more than the {MAX_SAFETENSORS_LEN} read"
        )));
    }
    if meta.is_file() && meta.len() != total {
        return Err(fmt(format!(
            "the file is {} bytes, its header gives {total}",
            meta.len()
        )));
    }
    let b = crate::fsutil::read_rest(f, b, total, total).map_err(io)?;
    from_safetensors(path, &b, act, norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lenet_core::model::ModelKind;

    fn model(kind: ModelKind) -> ModelFile {
        ModelFile {
            meta: ModelMeta {
                arch: kind.into(),
                act: Activation::Tanh,
                norm: Normalization::STANDARD,
            },
            params: (0..expected_params(kind))
                .map(|i| (i as f32).sqrt() * 1e-3 - 0.1)
                .collect(),
            checkpoint: None,
        }
    }

    /// The export is a pure function of the model: the metadata keys come
    /// out sorted, the tensors in data order, whatever order the hash map
    /// held them in; the library still reads it.
    #[test]
    fn export_bytes_are_canonical() {
        let m = model(ModelKind::LeNet5Max);
        let p = Path::new("m.safetensors");
        let a = to_safetensors(p, &m).unwrap();
        for _ in 0..8 {
            assert_eq!(to_safetensors(p, &m).unwrap(), a);
        }
        let n = u64::from_le_bytes(a[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let h = std::str::from_utf8(&a[8..8 + n]).unwrap();
        let keys = [
            "format",
            "lenet.activation",
            "lenet.model",
            "lenet.norm_mean",
            "lenet.norm_std",
        ];
        let at: Vec<usize> = keys
            .iter()
            .map(|k| h.find(&format!("\"{k}\"")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{h}");
        assert!(h.starts_with("{\"__metadata__\":{\"format\":\"pt\""), "{h}");
        let starts: Vec<usize> = h
            .match_indices("\"data_offsets\":[")
            .map(|(i, k)| h[i + k.len()..].split(',').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(starts.len(), state_dict_layout(m.meta.arch).len());
        assert!(starts.windows(2).all(|w| w[0] < w[1]), "{h}");
        assert_eq!(from_safetensors(p, &a, None, None).unwrap(), m);
    }

    #[test]
    fn every_network_round_trips_with_its_options() {
        use lenet_core::model::{AlexNetConfig, VggConfig};
        for arch in [
            Arch::Cnn,
            Arch::Vgg(VggConfig {
                blocks: 2,
                width_div: 16,
                size: 32,
                hidden: 32,
            }),
            Arch::AlexNet(AlexNetConfig {
                width_div: 16,
                size: 96,
                hidden: 32,
            }),
        ] {
            let n = arch.num_params();
            let m = ModelFile {
                meta: ModelMeta {
                    arch,
                    act: Activation::Relu,
                    norm: Normalization::STANDARD,
                },
                params: (0..n).map(|i| (i as f32 * 0.1).sin()).collect(),
                checkpoint: None,
            };
            let p = Path::new("m.safetensors");
            let b = to_safetensors(p, &m).unwrap();
            assert_eq!(from_safetensors(p, &b, None, None).unwrap(), m, "{arch}");
            let snippet = pytorch_snippet(arch, Activation::Relu, Normalization::STANDARD);
            let layout = state_dict_layout(arch);
            assert_eq!(
                layout
                    .iter()
                    .map(|(_, s)| s.iter().product::<usize>())
                    .sum::<usize>(),
                n
            );
            // One module per layer, in order, so the indices are the names.
            assert_eq!(
                snippet.matches("\n    nn.").count(),
                arch.layers().len(),
                "{snippet}"
            );
        }
        let cnn = pytorch_snippet(Arch::Cnn, Activation::Relu, Normalization::STANDARD);
        assert!(cnn.contains("nn.Conv2d(1, 64, kernel_size=3),\n    nn.MaxPool2d(kernel_size=2, stride=2),\n    nn.ReLU()"), "{cnn}");
        let vgg = Arch::Vgg(VggConfig::NOTES);
        let s = pytorch_snippet(vgg, Activation::Relu, Normalization::STANDARD);
        assert!(s.contains("nn.Upsample(size=(224, 224), mode=\"bilinear\", align_corners=False)"));
        assert!(s.contains("nn.Dropout(p=0.5)"));
        assert_eq!(
            state_dict_layout(vgg)[0],
            ("1.weight".to_string(), vec![64, 1, 3, 3])
        );
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

    /// A file longer than its header gives, or a header claiming more
    /// than is ever read, is refused by its size before the data is read.
    #[test]
    fn import_reads_only_what_the_header_gives() {
        let d = tempfile::tempdir().unwrap();
        let m = model(ModelKind::LeNet5);
        let good = to_safetensors(Path::new("m"), &m).unwrap();
        let p = d.path().join("long.safetensors");
        std::fs::write(&p, &good).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(6 << 30)
            .unwrap();
        let e = import_safetensors(&p, None, None).unwrap_err().to_string();
        assert!(
            e.contains("long.safetensors")
                && e.contains(&format!(
                    "the file is {} bytes, its header gives {}",
                    6u64 << 30,
                    good.len()
                )),
            "{e}"
        );
        let p = d.path().join("claim.safetensors");
        let mut b = good.clone();
        b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        std::fs::write(&p, &b).unwrap();
        let e = import_safetensors(&p, None, None).unwrap_err().to_string();
        assert!(
            e.contains("claim.safetensors") && e.contains("header claims"),
            "{e}"
        );
        #[cfg(target_os = "linux")]
        {
            let e = import_safetensors(Path::new("/dev/zero"), None, None)
                .unwrap_err()
                .to_string();
            assert!(e.contains("/dev/zero") && e.contains("safetensors"), "{e}");
        }
    }

    #[test]
    fn foreign_file_without_metadata_infers_kind() {
        let m = model(ModelKind::LeNet5Max);
        let bytes: Vec<u8> = m.params.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut views = Vec::new();
        let mut at = 0;
        for (name, shape) in state_dict_layout(m.meta.arch) {
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
        assert_eq!(got.meta.arch, ModelKind::LeNet5Max.into());
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
            for (name, shape) in state_dict_layout(m.meta.arch) {
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

        // A tensor named twice (the library keeps one of them).
        let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
        let h = std::str::from_utf8(&good[8..8 + n]).unwrap().trim_end();
        let at = h.find("\"0.weight\"").unwrap();
        let entry = &h[at..at + h[at..].find('}').unwrap() + 1];
        let h2 = format!("{}{entry},{}", &h[..at], &h[at..]);
        let mut dup = (h2.len() as u64).to_le_bytes().to_vec();
        dup.extend_from_slice(h2.as_bytes());
        dup.extend_from_slice(&good[8 + n..]);
        assert!(
            SafeTensors::deserialize(&dup).is_ok(),
            "the library takes it"
        );
        let e = from_safetensors(p, &dup, None, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.safetensors") && e.contains("tensor `0.weight` appears twice"),
            "{e}"
        );

        // A small file whose metadata claims the notes' full VGG (128.8 M
        // parameters): refused before 515 MB are allocated for it.
        let data = vec![0u8; 16];
        let v = TensorView::new(Dtype::F32, vec![4], &data).unwrap();
        let meta = HashMap::from([
            ("lenet.model".to_string(), "vgg".to_string()),
            ("lenet.activation".to_string(), "relu".to_string()),
        ]);
        let b = safetensors::serialize([("1.weight", v)], Some(meta)).unwrap();
        let e = from_safetensors(p, &b, None, Some(Normalization::UNIT))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.safetensors") && e.contains("but the file holds 16 bytes of tensors"),
            "{e}"
        );

        // An option the named network does not have.
        let data = vec![0u8; 16];
        let v = TensorView::new(Dtype::F32, vec![4], &data).unwrap();
        let meta = HashMap::from([
            ("lenet.model".to_string(), "cnn".to_string()),
            ("lenet.blocks".to_string(), "9".to_string()),
        ]);
        let b = safetensors::serialize([("1.weight", v)], Some(meta)).unwrap();
        let e = from_safetensors(p, &b, None, None).unwrap_err().to_string();
        assert!(
            e.contains("x.safetensors")
                && e.contains("lenet.blocks is given, but lenet.model `cnn` has no such option"),
            "{e}"
        );

        // NaN weight.
        m.params[3] = f32::NAN;
        let b = to_safetensors(p, &m).unwrap();
        let e = from_safetensors(p, &b, None, None).unwrap_err().to_string();
        assert!(e.contains("parameter 3 is NaN"), "{e}");
    }
}
