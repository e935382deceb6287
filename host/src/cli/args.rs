//! Argument types that several commands share: the network and its
//! options, activation, optimizer, device, schedule, normalization and the
//! dataset's location.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::builder::PossibleValue;
use clap::{Args, ValueEnum};
use lenet_core::activation::Activation;
use lenet_core::model::{Arch, ArchDefaults, FAMILIES, Family, NetOption};

use crate::backend::Device;
use crate::data::Normalization;
use crate::modelfile::NetOptions;

/// Network architecture: one of the families of [`FAMILIES`], by its
/// name, with its description as the help text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelArg(pub Family);

/// Every family, as `--model` values.
const MODEL_ARGS: [ModelArg; FAMILIES.len()] = {
    let mut v = [ModelArg(FAMILIES[0]); FAMILIES.len()];
    let mut i = 0;
    while i < v.len() {
        v[i] = ModelArg(FAMILIES[i]);
        i += 1;
    }
    v
};

impl ValueEnum for ModelArg {
    fn value_variants<'a>() -> &'a [Self] {
        &MODEL_ARGS
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.0.name).help(self.0.about))
    }
}

impl ModelArg {
    /// The name in files and settings.
    pub const fn name(self) -> &'static str {
        self.0.name
    }

    /// The family's training defaults (activation, learning rate).
    pub const fn defaults(self) -> ArchDefaults {
        self.0.base.defaults()
    }
}

/// Options of `vgg` and `alexnet` (the defaults are the notes' full-size
/// networks at 224x224).
#[derive(Clone, Copy, Debug, Default, Args)]
pub struct NetArgs {
    /// VGG: how many of the five blocks to use [default: 5].
    #[arg(long, value_name = "N")]
    pub blocks: Option<u8>,
    /// VGG and AlexNet: divide every convolution's channels by this
    /// [default: 1; the notes' small VGG uses 4].
    #[arg(long, value_name = "D")]
    pub width_div: Option<u16>,
    /// VGG and AlexNet: resize the 28x28 images bilinearly to this side
    /// first [default: 224; 28 keeps them as they are].
    #[arg(long, value_name = "SIDE")]
    pub input_size: Option<u16>,
    /// VGG and AlexNet: units of the two hidden dense layers [default: 4096].
    #[arg(long, value_name = "N")]
    pub hidden: Option<u32>,
}

impl NetArgs {
    /// Whether option `o` was given.
    fn given(&self, o: NetOption) -> bool {
        match o {
            NetOption::Blocks => self.blocks.is_some(),
            NetOption::WidthDiv => self.width_div.is_some(),
            NetOption::InputSize => self.input_size.is_some(),
            NetOption::Hidden => self.hidden.is_some(),
        }
    }

    /// The options, checked against the model: each family takes the
    /// options of its [`Family::options`].
    ///
    /// # Errors
    /// An option the model does not have.
    pub fn options(&self, model: ModelArg) -> Result<NetOptions> {
        for o in NetOption::ALL {
            if self.given(o) && !model.0.takes(o) {
                let takers: Vec<&str> = FAMILIES
                    .iter()
                    .filter(|f| f.takes(o))
                    .map(|f| f.name)
                    .collect();
                bail!(
                    "{} is an option of {}, not of --model {}",
                    o.flag(),
                    takers.join(" and "),
                    model.name()
                );
            }
        }
        let d = NetOptions::default();
        Ok(NetOptions {
            blocks: self.blocks.unwrap_or(d.blocks),
            width_div: self.width_div.unwrap_or(d.width_div),
            input_size: self.input_size.unwrap_or(d.input_size),
            hidden: self.hidden.unwrap_or(d.hidden),
        })
    }

    /// The network of `--model` with these options.
    ///
    /// # Errors
    /// An option the model does not have, or options that give no valid
    /// network.
    pub fn arch(&self, model: ModelArg) -> Result<Arch> {
        crate::modelfile::arch_from(model.name(), self.options(model)?).map_err(anyhow::Error::msg)
    }
}

/// Hidden activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ActArg {
    /// Logistic sigmoid (original LeNet-5).
    Sigmoid,
    /// Rectified linear unit.
    Relu,
    /// Hyperbolic tangent.
    Tanh,
}

impl ActArg {
    /// The activation it names.
    pub const fn act(self) -> Activation {
        match self {
            ActArg::Sigmoid => Activation::Sigmoid,
            ActArg::Relu => Activation::Relu,
            ActArg::Tanh => Activation::Tanh,
        }
    }
}

/// The activation of `--act`, or the model's default.
pub fn act_or_default(act: Option<ActArg>, model: ModelArg) -> Activation {
    act.map_or(model.defaults().act, ActArg::act)
}

/// Optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    /// Adam (betas 0.9/0.999, eps 1e-8).
    Adam,
    /// SGD with optional momentum.
    Sgd,
}

/// Compute device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The CPU (fast batched trainer).
    Cpu,
    /// The CPU, per-sample reference trainer on lenet-core (slow; the oracle).
    CpuReference,
    /// NVIDIA GPU (needs the `cuda` feature and a driver).
    Cuda,
    /// The CUDA trainer on the CPU: its kernels compiled for the CPU under an emulated CUDA execution model (needs the `cuda-emu` feature; slow, for checking).
    CudaEmu,
    /// CUDA when usable, otherwise the CPU (says which).
    Auto,
}

impl DeviceArg {
    /// The back end's device.
    pub const fn device(self) -> Device {
        match self {
            DeviceArg::Cpu => Device::Cpu,
            DeviceArg::CpuReference => Device::CpuReference,
            DeviceArg::Cuda => Device::Cuda,
            DeviceArg::CudaEmu => Device::CudaEmu,
            DeviceArg::Auto => Device::Auto,
        }
    }

    /// The name as typed on the command line.
    pub fn name(self) -> String {
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned())
    }
}

/// Learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    /// The same learning rate throughout.
    Constant,
    /// Half a cosine from --lr down to --lr/100 over the run.
    Cosine,
}

/// Input normalization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NormArg {
    /// Pixels scaled to [0, 1] (torchvision ToTensor).
    Unit,
    /// Standardized with the training-set mean 0.2860 and std 0.3530.
    Standard,
}

impl NormArg {
    /// The normalization it names.
    pub const fn norm(self) -> Normalization {
        match self {
            Self::Unit => Normalization::UNIT,
            Self::Standard => Normalization::STANDARD,
        }
    }
}

/// Where the dataset is.
#[derive(Debug, Args)]
pub struct DataArg {
    /// Dataset directory (IDX or Kaggle CSV files) or one Kaggle CSV file.
    /// Default: $FASHION_MNIST_DIR, ./data/fashion-mnist, /usr/share/datasets/fashion-mnist.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// Seed of the 70/30 train/test split of a single CSV file.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub split_seed: u64,
}
