//! Every network the project trains, as a layer list: the three LeNets and
//! the course notes' larger networks (a 64/128-channel ReLU CNN, VGG and
//! AlexNet), with the options the notes use to shrink them.
//!
//! An [`Arch`] is small and `Copy` (it is what a model file records);
//! [`Arch::layers`] builds its list without a heap.
//!
//! # Examples
//!
//! ```
//! use lenet_core::model::{Arch, Layer, VggConfig};
//! assert_eq!(Arch::Cnn.num_params(), 896_522);
//! // The notes' small VGG: channels divided by 4, 224x224 inputs resized
//! // from 28x28 by the first layer.
//! let vgg = Arch::Vgg(VggConfig { width_div: 4, ..VggConfig::NOTES });
//! assert_eq!(vgg.layers()[0], Layer::Upsample { h: 224, w: 224 });
//! assert_eq!(vgg.check(), Ok(()));
//! ```

use super::layers::{INPUT_SHAPE, Layer, Shape3, ShapeError};
use super::{CLASSES, ModelKind};
use crate::activation::Activation;
use crate::init::{Rng, bias_uniform, kaiming_uniform};

/// Longest layer list of any [`Arch`].
pub const MAX_LAYERS: usize = 40;

/// A layer list, on the stack.
pub type Layers = heapless::Vec<Layer, MAX_LAYERS>;

/// VGG as in the course notes: blocks of 3x3 convolutions (padding 1) and
/// ReLU, each block ending in 2x2 max pooling, then
/// `Linear -> ReLU -> Dropout(0.5)` twice and `Linear(10)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VggConfig {
    /// How many of the notes' five blocks `((1, 64), (1, 128), (2, 256),
    /// (2, 512), (2, 512))` (convolutions, channels), from the first.
    pub blocks: u8,
    /// Channels divided by this (the notes' small variant uses 4).
    pub width_div: u16,
    /// Input side: 28 keeps the images as they are, anything else resizes
    /// them bilinearly first.
    pub size: u16,
    /// Units of the two hidden dense layers.
    pub hidden: u32,
}

impl VggConfig {
    /// The notes' VGG-11: five blocks, full width, 224x224, 4096 units.
    pub const NOTES: VggConfig = VggConfig {
        blocks: 5,
        width_div: 1,
        size: 224,
        hidden: 4096,
    };
}

/// AlexNet as in the course notes' layer list: 11x11 stride-4 convolution
/// (padding 1), 5x5 (padding 2), three 3x3 (padding 1), ReLU after each,
/// 3x3 stride-2 max pooling after the first, second and fifth, then
/// `Linear -> ReLU -> Dropout(0.5)` twice and `Linear(10)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlexNetConfig {
    /// Channels `(96, 256, 384, 384, 256)` divided by this.
    pub width_div: u16,
    /// Input side (the notes: 224); the 28x28 images are resized to it.
    pub size: u16,
    /// Units of the two hidden dense layers.
    pub hidden: u32,
}

impl AlexNetConfig {
    /// The notes' AlexNet: full width, 224x224, 4096 units.
    pub const NOTES: AlexNetConfig = AlexNetConfig {
        width_div: 1,
        size: 224,
        hidden: 4096,
    };
}

/// Which network, with its options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// One of the LeNet-5 models (the only ones with `no_std` structs and
    /// an int8 path).
    LeNet(ModelKind),
    /// The notes' CNN: `Conv2d(1,64,3) -> MaxPool2d(2) -> ReLU ->
    /// Conv2d(64,128,3) -> MaxPool2d(2) -> ReLU -> Flatten(3200) ->
    /// Linear(256) -> ReLU -> Linear(10)`; 896,522 parameters.
    Cnn,
    /// VGG (see [`VggConfig`]).
    Vgg(VggConfig),
    /// AlexNet (see [`AlexNetConfig`]).
    AlexNet(AlexNetConfig),
}

/// An option of the larger networks (see [`VggConfig`] and
/// [`AlexNetConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetOption {
    /// VGG blocks ([`VggConfig::blocks`]).
    Blocks,
    /// Channel divisor ([`VggConfig::width_div`], [`AlexNetConfig::width_div`]).
    WidthDiv,
    /// Input side ([`VggConfig::size`], [`AlexNetConfig::size`]).
    InputSize,
    /// Hidden dense units ([`VggConfig::hidden`], [`AlexNetConfig::hidden`]).
    Hidden,
}

impl NetOption {
    /// Every option, in the order the command line and the files list them.
    pub const ALL: [NetOption; 4] = [
        NetOption::Blocks,
        NetOption::WidthDiv,
        NetOption::InputSize,
        NetOption::Hidden,
    ];

    /// The command-line flag: `--blocks`, `--width-div`, `--input-size`,
    /// `--hidden`.
    pub const fn flag(self) -> &'static str {
        match self {
            NetOption::Blocks => "--blocks",
            NetOption::WidthDiv => "--width-div",
            NetOption::InputSize => "--input-size",
            NetOption::Hidden => "--hidden",
        }
    }

    /// The field name in a checkpoint's settings: `blocks`, `width_div`,
    /// `input_size`, `hidden`.
    pub const fn name(self) -> &'static str {
        match self {
            NetOption::Blocks => "blocks",
            NetOption::WidthDiv => "width_div",
            NetOption::InputSize => "input_size",
            NetOption::Hidden => "hidden",
        }
    }

    /// The key of the safetensors metadata: `lenet.blocks`, ...
    pub const fn metadata_key(self) -> &'static str {
        match self {
            NetOption::Blocks => "lenet.blocks",
            NetOption::WidthDiv => "lenet.width_div",
            NetOption::InputSize => "lenet.input_size",
            NetOption::Hidden => "lenet.hidden",
        }
    }
}

/// What a network trains with when the command line does not say: the
/// LeNets as in the original (sigmoid, Adam at 5e-3), the larger networks
/// as in the course notes (ReLU, Adam at 1e-3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ArchDefaults {
    /// Hidden-layer activation.
    pub act: Activation,
    /// Peak learning rate.
    pub lr: f32,
}

const LENET_DEFAULTS: ArchDefaults = ArchDefaults {
    act: Activation::Sigmoid,
    lr: 5e-3,
};
const NOTES_DEFAULTS: ArchDefaults = ArchDefaults {
    act: Activation::Relu,
    lr: 1e-3,
};

/// One network family under every name and number it goes by; see
/// [`FAMILIES`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Family {
    /// Name on the command line and in a checkpoint's settings.
    pub name: &'static str,
    /// Architecture byte of the `.lenet` model file (byte 12).
    pub file_code: u8,
    /// Architecture byte of the int8 `.q8` file, for the networks that
    /// have an int8 path.
    pub q8_code: Option<u8>,
    /// Value of `lenet.model` in the safetensors metadata.
    pub metadata_name: &'static str,
    /// One line for the command line's list of networks.
    pub about: &'static str,
    /// The network with the notes' options (the family's only network
    /// when it has none).
    pub base: Arch,
    /// The options the family takes.
    pub options: &'static [NetOption],
    /// Training defaults (see [`Arch::defaults`]).
    pub defaults: ArchDefaults,
}

const NET_OPTIONS: [NetOption; 4] = NetOption::ALL;
const ALEX_OPTIONS: [NetOption; 3] = [NetOption::WidthDiv, NetOption::InputSize, NetOption::Hidden];

/// Every network family, in the order the command line lists them. Each
/// name and code here is the one written into files, so they never change:
/// a file written by an earlier version must still load.
pub const FAMILIES: [Family; 6] = [
    Family {
        name: "lenet5",
        file_code: 0,
        q8_code: Some(0),
        metadata_name: "lenet5",
        about: "Classic LeNet-5: padded first conv, average pooling, 400-input fc1",
        base: Arch::LeNet(ModelKind::LeNet5),
        options: &[],
        defaults: LENET_DEFAULTS,
    },
    Family {
        name: "lenet5-max",
        file_code: 1,
        q8_code: Some(1),
        metadata_name: "lenet5-max",
        about: "d2l variant: no padding, max pooling, 256-input fc1",
        base: Arch::LeNet(ModelKind::LeNet5Max),
        options: &[],
        defaults: LENET_DEFAULTS,
    },
    Family {
        name: "lenet5-wide",
        file_code: 2,
        q8_code: Some(2),
        metadata_name: "lenet5-wide",
        about: "d2l variant widened to 16 and 32 channels, 512-input fc1 (85,822 parameters)",
        base: Arch::LeNet(ModelKind::LeNet5Wide),
        options: &[],
        defaults: LENET_DEFAULTS,
    },
    Family {
        name: "cnn",
        file_code: 3,
        q8_code: None,
        metadata_name: "cnn",
        about: "The notes' 64/128-channel ReLU CNN (896,522 parameters)",
        base: Arch::Cnn,
        options: &[],
        defaults: NOTES_DEFAULTS,
    },
    Family {
        name: "vgg",
        file_code: 4,
        q8_code: None,
        metadata_name: "vgg",
        about: "The notes' VGG (see --blocks, --width-div, --input-size, --hidden)",
        base: Arch::Vgg(VggConfig::NOTES),
        options: &NET_OPTIONS,
        defaults: NOTES_DEFAULTS,
    },
    Family {
        name: "alexnet",
        file_code: 5,
        q8_code: None,
        metadata_name: "alexnet",
        about: "The notes' AlexNet (see --width-div, --input-size, --hidden)",
        base: Arch::AlexNet(AlexNetConfig::NOTES),
        options: &ALEX_OPTIONS,
        defaults: NOTES_DEFAULTS,
    },
];

impl Family {
    /// The family named `name` on the command line, or `None`.
    pub fn by_name(name: &str) -> Option<Family> {
        FAMILIES.into_iter().find(|f| f.name == name)
    }

    /// The family of `.lenet` architecture byte `code`, or `None`.
    pub fn by_file_code(code: u8) -> Option<Family> {
        FAMILIES.into_iter().find(|f| f.file_code == code)
    }

    /// The family of `.q8` architecture byte `code`, or `None`.
    pub fn by_q8_code(code: u8) -> Option<Family> {
        FAMILIES.into_iter().find(|f| f.q8_code == Some(code))
    }

    /// The family whose safetensors `lenet.model` is `name`, or `None`.
    pub fn by_metadata_name(name: &str) -> Option<Family> {
        FAMILIES.into_iter().find(|f| f.metadata_name == name)
    }

    /// Whether the family takes option `o`.
    pub fn takes(&self, o: NetOption) -> bool {
        self.options.contains(&o)
    }

    /// The family's network with options `vgg` (for VGG) or `alex` (for
    /// AlexNet); the other families have one network each.
    pub const fn with(&self, vgg: VggConfig, alex: AlexNetConfig) -> Arch {
        match self.base {
            Arch::Vgg(_) => Arch::Vgg(vgg),
            Arch::AlexNet(_) => Arch::AlexNet(alex),
            a => a,
        }
    }
}

const VGG_BLOCKS: [(usize, usize); 5] = [(1, 64), (1, 128), (2, 256), (2, 512), (2, 512)];
const ALEX_CHANNELS: [usize; 5] = [96, 256, 384, 384, 256];

fn conv(i: usize, o: usize, k: usize, padding: usize, stride: usize) -> Layer {
    Layer::Conv2d {
        in_channels: i,
        out_channels: o,
        kernel: k,
        padding,
        stride,
    }
}

fn linear(i: usize, o: usize) -> Layer {
    Layer::Linear {
        in_features: i,
        out_features: o,
    }
}

/// `n / div`, at least 1.
fn div(n: usize, d: u16) -> usize {
    (n / usize::from(d.max(1))).max(1)
}

struct Builder {
    layers: Layers,
    shape: Shape3,
    ok: bool,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            layers: Layers::new(),
            shape: INPUT_SHAPE,
            ok: true,
        }
    }

    fn push(&mut self, l: Layer) {
        match l.output_shape(self.shape) {
            Ok(s) => self.shape = s,
            // Keep the list (so `check` can name the layer) but stop
            // tracking the shape.
            Err(_) => self.ok = false,
        }
        if self.layers.push(l).is_err() {
            self.ok = false;
        }
    }

    fn resize(&mut self, size: u16) {
        let s = usize::from(size);
        if s != INPUT_SHAPE.h {
            self.push(Layer::Upsample { h: s, w: s });
        }
    }

    fn head(&mut self, hidden: usize) {
        self.push(Layer::Flatten);
        self.push(linear(self.shape.len(), hidden));
        self.push(Layer::Act);
        self.push(Layer::Dropout { p: 0.5 });
        self.push(linear(hidden, hidden));
        self.push(Layer::Act);
        self.push(Layer::Dropout { p: 0.5 });
        self.push(linear(hidden, CLASSES));
    }
}

impl Arch {
    /// The name of every family, in [`FAMILIES`] order.
    pub const ALL_NAMES: [&'static str; 6] = {
        let mut n = [""; 6];
        let mut i = 0;
        while i < n.len() {
            n[i] = FAMILIES[i].name;
            i += 1;
        }
        n
    };

    /// The network as the layer list of its PyTorch `nn.Sequential`
    /// (hidden activations are [`Layer::Act`]: ReLU for the larger
    /// networks, as in the notes).
    pub fn layers(self) -> Layers {
        let mut b = Builder::new();
        match self {
            Arch::LeNet(kind) => {
                for l in kind.layers() {
                    b.push(*l);
                }
            }
            Arch::Cnn => {
                let pool = Layer::MaxPool2d {
                    kernel: 2,
                    stride: 2,
                };
                for l in [
                    conv(1, 64, 3, 0, 1),
                    pool,
                    Layer::Act,
                    conv(64, 128, 3, 0, 1),
                    pool,
                    Layer::Act,
                    Layer::Flatten,
                    linear(3200, 256),
                    Layer::Act,
                    linear(256, CLASSES),
                ] {
                    b.push(l);
                }
            }
            Arch::Vgg(c) => {
                b.resize(c.size);
                let mut ch = 1;
                for &(convs, out) in VGG_BLOCKS.iter().take(usize::from(c.blocks)) {
                    let out = div(out, c.width_div);
                    for _ in 0..convs {
                        b.push(conv(ch, out, 3, 1, 1));
                        b.push(Layer::Act);
                        ch = out;
                    }
                    b.push(Layer::MaxPool2d {
                        kernel: 2,
                        stride: 2,
                    });
                }
                b.head(c.hidden as usize);
            }
            Arch::AlexNet(c) => {
                b.resize(c.size);
                let [c1, c2, c3, c4, c5] = ALEX_CHANNELS.map(|n| div(n, c.width_div));
                let pool = Layer::MaxPool2d {
                    kernel: 3,
                    stride: 2,
                };
                for l in [
                    conv(1, c1, 11, 1, 4),
                    Layer::Act,
                    pool,
                    conv(c1, c2, 5, 2, 1),
                    Layer::Act,
                    pool,
                    conv(c2, c3, 3, 1, 1),
                    Layer::Act,
                    conv(c3, c4, 3, 1, 1),
                    Layer::Act,
                    conv(c4, c5, 3, 1, 1),
                    Layer::Act,
                    pool,
                ] {
                    b.push(l);
                }
                b.head(c.hidden as usize);
            }
        }
        b.layers
    }

    /// Checks that every layer takes its input and that the network ends
    /// in 10 logits.
    ///
    /// # Errors
    /// The first layer that does not fit (a too small input, too many
    /// blocks for the input side, zero hidden units, ...).
    pub fn check(self) -> Result<(), ShapeError> {
        super::Plan::new(self).map(|_| ())
    }

    /// Shape after each layer, from the 28x28 input.
    pub fn shapes(self) -> heapless::Vec<Shape3, MAX_LAYERS> {
        let mut s = INPUT_SHAPE;
        let mut out = heapless::Vec::new();
        for l in self.layers() {
            s = l.output_shape(s).unwrap_or(Shape3 { c: 0, h: 0, w: 0 });
            let _ = out.push(s);
        }
        out
    }

    /// Number of trainable scalars.
    pub fn num_params(self) -> usize {
        self.layers().iter().map(|l| l.num_params()).sum()
    }

    /// Multiply-accumulates of one forward pass on one image.
    pub fn macs(self) -> u64 {
        let mut s = INPUT_SHAPE;
        let mut total = 0u64;
        for l in self.layers() {
            let o = l.output_shape(s).unwrap_or(s);
            total += match l {
                Layer::Conv2d {
                    in_channels,
                    kernel,
                    ..
                } => (o.len() * in_channels * kernel * kernel) as u64,
                Layer::Linear {
                    in_features,
                    out_features,
                } => (in_features * out_features) as u64,
                _ => 0,
            };
            s = o;
        }
        total
    }

    /// Name on the command line and in files: `"lenet5"`, ..., `"cnn"`,
    /// `"vgg"`, `"alexnet"` (the family's [`Family::name`]).
    pub const fn name(self) -> &'static str {
        self.family().name
    }

    /// The network's family: its names and file codes.
    pub const fn family(self) -> Family {
        FAMILIES[match self {
            Arch::LeNet(ModelKind::LeNet5) => 0,
            Arch::LeNet(ModelKind::LeNet5Max) => 1,
            Arch::LeNet(ModelKind::LeNet5Wide) => 2,
            Arch::Cnn => 3,
            Arch::Vgg(_) => 4,
            Arch::AlexNet(_) => 5,
        }]
    }

    /// What the network trains with unless told otherwise: activation and
    /// learning rate (see [`ArchDefaults`]).
    pub const fn defaults(self) -> ArchDefaults {
        self.family().defaults
    }

    /// PyTorch's default initialization of every layer, in list order:
    /// weights by [`kaiming_uniform`] and biases by [`bias_uniform`] with
    /// the layer's fan-in (the LeNet structs' `init` draws the same
    /// values). `params` is flat, `state_dict` order, of
    /// [`num_params`](Self::num_params) values.
    ///
    /// # Panics
    /// If `params` has another length.
    pub fn init(self, params: &mut [f32], rng: &mut Rng) {
        assert_eq!(params.len(), self.num_params(), "parameter count");
        let mut off = 0;
        for l in self.layers() {
            if let Some((w, b)) = l.param_shapes() {
                let fan_in = w[1] * w[2] * w[3];
                let nw = w[0] * fan_in;
                kaiming_uniform(&mut params[off..off + nw], fan_in, rng);
                bias_uniform(&mut params[off + nw..off + nw + b], fan_in, rng);
                off += nw + b;
            }
        }
    }

    /// The LeNet kind, if it is one.
    pub const fn lenet(self) -> Option<ModelKind> {
        match self {
            Arch::LeNet(k) => Some(k),
            _ => None,
        }
    }
}

impl From<ModelKind> for Arch {
    fn from(k: ModelKind) -> Arch {
        Arch::LeNet(k)
    }
}

impl core::fmt::Display for Arch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Arch::LeNet(_) | Arch::Cnn => f.write_str(self.name()),
            Arch::Vgg(c) => write!(
                f,
                "vgg ({} blocks, width /{}, {}x{}, {} hidden)",
                c.blocks, c.width_div, c.size, c.size, c.hidden
            ),
            Arch::AlexNet(c) => write!(
                f,
                "alexnet (width /{}, {}x{}, {} hidden)",
                c.width_div, c.size, c.size, c.hidden
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notes_networks_have_their_sizes() {
        assert_eq!(Arch::Cnn.check(), Ok(()));
        assert_eq!(Arch::Cnn.num_params(), 896_522);
        let vgg = Arch::Vgg(VggConfig::NOTES);
        assert_eq!(vgg.check(), Ok(()));
        // 512 * 7 * 7 -> 4096 after five blocks at 224.
        assert!(vgg.layers().contains(&linear(25_088, 4096)));
        assert_eq!(vgg.layers().len(), 1 + 8 * 2 + 5 + 8);
        let alex = Arch::AlexNet(AlexNetConfig::NOTES);
        assert_eq!(alex.check(), Ok(()));
        // 256 * 5 * 5 = 6400 flattened features, as in the notes.
        assert!(alex.layers().contains(&linear(6400, 4096)));
        assert_eq!(alex.num_params(), 46_764_746);
        let small = Arch::Vgg(VggConfig {
            blocks: 3,
            width_div: 4,
            size: 28,
            hidden: 4096,
        });
        assert_eq!(small.check(), Ok(()));
        assert!(small.layers().contains(&linear(64 * 3 * 3, 4096)));
        for k in ModelKind::ALL {
            assert_eq!(Arch::LeNet(k).num_params(), k.num_params());
            assert_eq!(&Arch::LeNet(k).layers()[..], k.layers());
        }
    }

    /// The names and codes are what files hold: they never change.
    #[test]
    fn the_family_table_keeps_every_name_and_code() {
        let want = [
            ("lenet5", 0, Some(0)),
            ("lenet5-max", 1, Some(1)),
            ("lenet5-wide", 2, Some(2)),
            ("cnn", 3, None),
            ("vgg", 4, None),
            ("alexnet", 5, None),
        ];
        for (f, (name, code, q8)) in FAMILIES.iter().zip(want) {
            assert_eq!((f.name, f.file_code, f.q8_code), (name, code, q8));
            assert_eq!(f.metadata_name, name);
            assert_eq!(f.base.family(), *f);
            assert_eq!(f.base.name(), name);
            assert_eq!(Family::by_name(name), Some(*f));
            assert_eq!(Family::by_file_code(code), Some(*f));
            assert_eq!(Family::by_metadata_name(name), Some(*f));
            if let Some(q) = q8 {
                assert_eq!(Family::by_q8_code(q), Some(*f));
            }
            // Only the LeNets have an int8 path.
            assert_eq!(f.q8_code.is_some(), f.base.lenet().is_some());
        }
        assert_eq!(
            Arch::ALL_NAMES.map(|n| Family::by_name(n).unwrap().name),
            Arch::ALL_NAMES
        );
        assert_eq!(Family::by_file_code(6), None);
        assert_eq!(Family::by_q8_code(3), None);
        assert_eq!(Arch::Cnn.defaults().act, Activation::Relu);
        assert_eq!(Arch::from(ModelKind::LeNet5Wide).defaults().lr, 5e-3);
    }

    #[test]
    fn sizes_that_do_not_fit_are_refused() {
        let tiny = Arch::AlexNet(AlexNetConfig {
            size: 40,
            ..AlexNetConfig::NOTES
        });
        assert!(tiny.check().is_err());
        let deep = Arch::Vgg(VggConfig {
            blocks: 5,
            size: 28,
            ..VggConfig::NOTES
        });
        assert!(deep.check().is_err());
        let zero = Arch::Vgg(VggConfig {
            blocks: 0,
            ..VggConfig::NOTES
        });
        assert!(zero.check().is_err());
        let none = Arch::AlexNet(AlexNetConfig {
            hidden: 0,
            ..AlexNetConfig::NOTES
        });
        assert!(none.check().is_err());
    }
}
