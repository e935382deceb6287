//! Command-line interface: argument definitions (clap derive) and the thin
//! glue that calls the library for each subcommand.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::backend::{self, Device};
use crate::cpu::graph::RunKind;
use crate::data::{self, Normalization};
use crate::eval::evaluate;
use crate::export::{export_safetensors, import_safetensors, pytorch_snippet};
use crate::fetch::{FetchOptions, OFFICIAL_BASE_URL, fetch};
use crate::modelfile::{ModelFile, act_name, kind_name};
use crate::predict::{load_image, predict};
use crate::train::{
    MAX_BATCH, MAX_THREADS, TrainError, TrainSettings, files, resume_settings, train,
};

/// Train, evaluate and export LeNet-5 on Fashion-MNIST.
#[derive(Debug, Parser)]
#[command(name = "host", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a model; writes model, checkpoint, metrics CSV and plots to --out.
    Train(TrainArgs),
    /// Evaluate a model: loss, accuracy, per-class accuracy, confusion matrix.
    Eval(EvalArgs),
    /// Classify image files (PNG/JPEG, any size) or test-set samples.
    Predict(PredictArgs),
    /// Export a model as safetensors with PyTorch state_dict names.
    Export(ExportArgs),
    /// Import PyTorch safetensors weights into a model file.
    Import(ImportArgs),
    /// Download the official Fashion-MNIST files and check their MD5 sums.
    Fetch(FetchArgs),
    /// Show where the data is and which devices are usable.
    Info(DataArg),
    /// Measure training and inference speed of the CPU back end (random data).
    Bench(BenchArgs),
    /// List the networks: layers, parameters, multiply-accumulates.
    Models(ModelsArgs),
    /// Check a device against PyTorch's golden records: every network's
    /// logits, gradients and training steps, one at a time.
    Check(CheckArgs),
}

/// `host check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Compute device to check: cpu (default), cpu-reference, cuda or cuda-emu.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Folder of the golden files (lenet.bin, nets.bin) [default:
    /// $LENET_GOLDEN, golden/ beside the executable, ./tests/golden].
    #[arg(long, value_name = "DIR")]
    pub golden: Option<PathBuf>,
    /// Only the record groups whose name contains one of these words
    /// (comma-separated), e.g. `lenet/max,vgg`.
    #[arg(long, value_delimiter = ',', value_name = "WORDS")]
    pub only: Vec<String>,
    /// Compare only the logits, the first training step's loss and
    /// gradients and the first Adam step's loss: every kernel once, for
    /// slow tools such as compute-sanitizer.
    #[arg(long)]
    pub one_step: bool,
    /// On cuda-emu, check the full CNN too (about a minute there; by
    /// default only its logits of two images).
    #[arg(long)]
    pub full: bool,
}

/// `host models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Show one network layer by layer (with its options) instead of the
    /// table of all of them.
    #[arg(long, value_enum)]
    pub model: Option<ModelArg>,
    /// Options of the larger networks.
    #[command(flatten)]
    pub net: NetArgs,
    /// With --model: print the network as a PyTorch `nn.Sequential`
    /// expression instead (the module list of `host export --print-pytorch`).
    #[arg(long, requires = "model")]
    pub pytorch: bool,
    /// Hidden-layer activation of --pytorch [default: sigmoid for the
    /// LeNets, relu for the others].
    #[arg(long, value_enum, requires = "pytorch")]
    pub act: Option<ActArg>,
}

/// Network architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModelArg {
    /// Classic LeNet-5: padded first conv, average pooling, 400-input fc1.
    Lenet5,
    /// d2l variant: no padding, max pooling, 256-input fc1.
    Lenet5Max,
    /// d2l variant widened to 16 and 32 channels, 512-input fc1 (85,822
    /// parameters).
    Lenet5Wide,
    /// The notes' 64/128-channel ReLU CNN (896,522 parameters).
    Cnn,
    /// The notes' VGG (see --blocks, --width-div, --input-size, --hidden).
    Vgg,
    /// The notes' AlexNet (see --width-div, --input-size, --hidden).
    Alexnet,
}

impl ModelArg {
    /// The name in files and settings.
    pub const fn name(self) -> &'static str {
        match self {
            ModelArg::Lenet5 => "lenet5",
            ModelArg::Lenet5Max => "lenet5-max",
            ModelArg::Lenet5Wide => "lenet5-wide",
            ModelArg::Cnn => "cnn",
            ModelArg::Vgg => "vgg",
            ModelArg::Alexnet => "alexnet",
        }
    }

    /// Whether it is one of the LeNets (sigmoid and lr 5e-3 by default;
    /// the larger networks default to ReLU and lr 1e-3, as in the notes).
    pub const fn is_lenet(self) -> bool {
        matches!(
            self,
            ModelArg::Lenet5 | ModelArg::Lenet5Max | ModelArg::Lenet5Wide
        )
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
    /// The options, checked against the model: only `vgg` takes
    /// `--blocks`, and only `vgg` and `alexnet` take the others.
    ///
    /// # Errors
    /// An option the model does not have.
    pub fn options(&self, model: ModelArg) -> Result<crate::modelfile::NetOptions> {
        let given = [
            ("--blocks", self.blocks.is_some(), model == ModelArg::Vgg),
            (
                "--width-div",
                self.width_div.is_some(),
                matches!(model, ModelArg::Vgg | ModelArg::Alexnet),
            ),
            (
                "--input-size",
                self.input_size.is_some(),
                matches!(model, ModelArg::Vgg | ModelArg::Alexnet),
            ),
            (
                "--hidden",
                self.hidden.is_some(),
                matches!(model, ModelArg::Vgg | ModelArg::Alexnet),
            ),
        ];
        for (flag, set, takes) in given {
            if set && !takes {
                bail!(
                    "{flag} is an option of {}, not of --model {}",
                    if flag == "--blocks" {
                        "vgg"
                    } else {
                        "vgg and alexnet"
                    },
                    model.name()
                );
            }
        }
        let d = crate::modelfile::NetOptions::default();
        Ok(crate::modelfile::NetOptions {
            blocks: self.blocks.unwrap_or(d.blocks),
            width_div: self.width_div.unwrap_or(d.width_div),
            input_size: self.input_size.unwrap_or(d.input_size),
            hidden: self.hidden.unwrap_or(d.hidden),
        })
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
    fn norm(self) -> Normalization {
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

/// `host train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Dataset location.
    #[command(flatten)]
    pub data: DataArg,
    /// Network architecture.
    #[arg(long, value_enum, default_value = "lenet5")]
    pub model: ModelArg,
    /// Options of the larger networks.
    #[command(flatten)]
    pub net: NetArgs,
    /// Hidden-layer activation [default: sigmoid for the LeNets, relu for
    /// the others].
    #[arg(long, value_enum)]
    pub act: Option<ActArg>,
    /// Optimizer.
    #[arg(long, value_enum, default_value = "adam")]
    pub optimizer: OptimizerArg,
    /// Learning rate, the peak of the schedule [default: 5e-3 for the
    /// LeNets, 1e-3 for the others].
    #[arg(long)]
    pub lr: Option<f32>,
    /// SGD momentum (ignored by Adam).
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// Number of epochs (with --resume: total epochs to reach; default 30).
    #[arg(long)]
    pub epochs: Option<u32>,
    /// Learning-rate schedule over the run (per optimizer step).
    #[arg(long, value_enum, default_value = "cosine")]
    pub schedule: ScheduleArg,
    /// Epochs of linear learning-rate warm-up from --lr/10.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub warmup_epochs: u32,
    /// Mini-batch size.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// L2 weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Seed of initialization, shuffling, augmentation and splits.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads [default: all cores; with --resume, the checkpoint's].
    /// A run is bit-reproducible for a given thread count.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Fraction of the training set held out for validation.
    #[arg(long, default_value_t = 0.0)]
    pub val_split: f64,
    /// Augment: random shifts by up to --shift pixels and horizontal flips.
    #[arg(long)]
    pub augment: bool,
    /// Largest shift of --augment, in pixels (0: flips only).
    #[arg(long, default_value_t = 2, value_name = "PIXELS")]
    pub shift: u32,
    /// Input normalization (stored in the model file).
    #[arg(long, value_enum, default_value = "standard")]
    pub normalize: NormArg,
    /// Compute device. With cuda, LENET_CUDA_SYNC=1 waits for every kernel launch and names a failing kernel with its grid, block and arguments (slower; for debugging).
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,
    /// Output directory [default: runs/<model>-<act>, or the checkpoint's directory].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue from a checkpoint (its settings are used; --epochs may raise the total).
    #[arg(long, value_name = "CHECKPOINT")]
    pub resume: Option<PathBuf>,
    /// Train on the first N training images only (0: all).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub limit_train: usize,
    /// Test on the first N test images only (0: all).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub limit_test: usize,
    /// Leave these classes (0..=9, comma-separated) out of the training set;
    /// the model keeps ten outputs and is tested on every class.
    #[arg(long, value_delimiter = ',', value_name = "CLASSES",
          value_parser = clap::value_parser!(u8).range(0..10))]
    pub exclude_classes: Vec<u8>,
    /// The flags given on the command line (filled by [`parse_args`]), so
    /// `--resume` can refuse settings it would otherwise ignore.
    #[arg(skip)]
    pub explicit: Vec<String>,
}

/// `host eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model file (.lenet) or a training output directory.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Dataset location.
    #[command(flatten)]
    pub data: DataArg,
    /// Evaluate the training set instead of the test set.
    #[arg(long)]
    pub train_set: bool,
    /// Evaluate the first N samples only (0: all).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub limit: usize,
    /// Worker threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Also quantize the model to int8 (calibrated on training images) and
    /// report the int8 accuracy next to the float one.
    #[arg(long)]
    pub int8: bool,
    /// With --int8: evaluate this exported .q8 file instead of quantizing anew.
    #[arg(long, value_name = "FILE", requires = "int8")]
    pub q8: Option<PathBuf>,
    /// With --int8: training images used to calibrate the int8 ranges.
    #[arg(long, default_value_t = crate::int8::DEFAULT_CALIBRATION_IMAGES, value_name = "N", requires = "int8")]
    pub calibration: usize,
    /// With --q8: also evaluate the .q8 trunk with this head, learned on a
    /// device (the firmware's `learn` writes it), per class.
    #[arg(long, value_name = "FILE", requires = "q8")]
    pub head: Option<PathBuf>,
}

/// `host predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Model file (.lenet) or a training output directory.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Image files (PNG or JPEG, any size; light backgrounds are inverted).
    #[arg(value_name = "IMAGE", required_unless_present = "index")]
    pub images: Vec<PathBuf>,
    /// Classify test-set sample N instead (repeatable).
    #[arg(long, value_name = "N", conflicts_with = "images")]
    pub index: Vec<usize>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Dataset location (for --index).
    #[command(flatten)]
    pub data: DataArg,
}

/// `host export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Model file (.lenet) or a training output directory.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Output file [default: the model path with extension .safetensors].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Export the int8-quantized model for the firmware (.q8) instead,
    /// calibrated on training images, and report float vs int8 test accuracy.
    #[arg(long)]
    pub int8: bool,
    /// Training images used to calibrate the int8 ranges.
    #[arg(long, default_value_t = crate::int8::DEFAULT_CALIBRATION_IMAGES, value_name = "N", requires = "int8")]
    pub calibration: usize,
    /// Calibrate on training images of the other classes only (0..=9,
    /// comma-separated): for a model trained with --exclude-classes, so the
    /// int8 ranges never see those classes either.
    #[arg(long, value_delimiter = ',', value_name = "CLASSES", requires = "int8",
          value_parser = clap::value_parser!(u8).range(0..10))]
    pub exclude_classes: Vec<u8>,
    /// Dataset location (for --int8 calibration and evaluation).
    #[command(flatten)]
    pub data: DataArg,
    /// Also print the PyTorch code that loads the export.
    #[arg(long)]
    pub print_pytorch: bool,
}

/// `host import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// safetensors file with a LeNet-5 state_dict.
    #[arg(value_name = "FILE")]
    pub input: PathBuf,
    /// Output model file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Activation; required when the file does not record it (a plain
    /// PyTorch state_dict does not), overrides the file's otherwise.
    #[arg(long, value_enum)]
    pub act: Option<ActArg>,
    /// Input normalization; required when the file does not record it,
    /// overrides the file's otherwise.
    #[arg(long, value_enum)]
    pub normalize: Option<NormArg>,
}

/// `host bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Network architecture.
    #[arg(long, value_enum, default_value = "lenet5")]
    pub model: ModelArg,
    /// Options of the larger networks.
    #[command(flatten)]
    pub net: NetArgs,
    /// Hidden-layer activation [default: sigmoid for the LeNets, relu for
    /// the others].
    #[arg(long, value_enum)]
    pub act: Option<ActArg>,
    /// Worker threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Batch size of the training and inference measurements.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Seconds spent on each measurement.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Compute device: cpu (default), cuda or cuda-emu; the GPU devices also time one epoch.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Images in the epoch timed on a GPU device (random images, resident on the device).
    #[arg(long, default_value_t = 60_000, value_name = "N")]
    pub epoch_images: usize,
    /// With --device cuda or cuda-emu: first time one training step kernel by kernel (device events; the host clock on cuda-emu) and print a table of kernel, launches, total ms and % of the step.
    #[arg(long)]
    pub profile: bool,
}

/// `host fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Base URL of the four files.
    #[arg(long, default_value = OFFICIAL_BASE_URL)]
    pub base_url: String,
    /// Destination directory.
    #[arg(long, default_value = data::LOCAL_DIR, value_name = "DIR")]
    pub dest: PathBuf,
    /// Download even if files with the right checksum are present.
    #[arg(long)]
    pub force: bool,
}

fn core_act(a: ActArg) -> lenet_core::activation::Activation {
    use lenet_core::activation::Activation;
    match a {
        ActArg::Sigmoid => Activation::Sigmoid,
        ActArg::Relu => Activation::Relu,
        ActArg::Tanh => Activation::Tanh,
    }
}

fn device(d: DeviceArg) -> Device {
    match d {
        DeviceArg::Cpu => Device::Cpu,
        DeviceArg::CpuReference => Device::CpuReference,
        DeviceArg::Cuda => Device::Cuda,
        DeviceArg::CudaEmu => Device::CudaEmu,
        DeviceArg::Auto => Device::Auto,
    }
}

/// A model path may name a training output directory.
fn model_path(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join(files::MODEL)
    } else {
        p.to_owned()
    }
}

fn load_data(d: &DataArg) -> Result<data::Splits> {
    let src = data::locate(d.data.as_deref())?;
    eprintln!("data: {src}");
    Ok(data::load(&src, d.split_seed)?)
}

/// Parses the process's command line (exiting with clap's message on a
/// syntax error) and records which `train` flags were given explicitly.
pub fn parse_args() -> Cli {
    parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// [`parse_args`] of the given command line.
///
/// # Errors
/// clap's error for a command line that does not parse.
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cmd = Cli::command();
    let matches = cmd.clone().try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let (Command::Train(t), Some(("train", m))) = (&mut cli.command, matches.subcommand()) {
        // Only the flags themselves: the ids of flattened groups
        // (`DataArg`, `NetArgs`) are not flags anyone can type.
        let train = cmd.find_subcommand("train").expect("the train subcommand");
        t.explicit = train
            .get_arguments()
            .filter(|a| m.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
            .map(|a| a.get_id().as_str().to_string())
            .collect();
    }
    Ok(cli)
}

/// An error and its causes on one line, each cause once: causes whose text
/// the line already holds (an I/O error repeated by its wrapper) are left
/// out.
pub fn error_message(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let t = cause.to_string();
        if line.contains(&t) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&t);
    }
    line
}

/// Train flags that `--resume` honours; every other setting comes from the
/// checkpoint.
const RESUME_FLAGS: [&str; 7] = [
    "resume",
    "epochs",
    "threads",
    "out",
    "data",
    "split_seed",
    "device",
];

fn check_threads(t: usize) -> Result<()> {
    if t > MAX_THREADS {
        bail!("--threads {t} must be at most {MAX_THREADS}");
    }
    Ok(())
}

/// Runs a parsed command line.
///
/// # Errors
/// Whatever the command reports; printed by `main`.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(a) => cmd_train(a),
        Command::Eval(a) => cmd_eval(a),
        Command::Predict(a) => cmd_predict(a),
        Command::Export(a) => cmd_export(a),
        Command::Import(a) => cmd_import(a),
        Command::Fetch(a) => cmd_fetch(a),
        Command::Info(a) => cmd_info(a),
        Command::Bench(a) => cmd_bench(a),
        Command::Models(a) => cmd_models(a),
        Command::Check(a) => cmd_check(a),
    }
}

fn cmd_check(a: CheckArgs) -> Result<()> {
    let dir = match a.golden {
        Some(d) => d,
        None => crate::golden::default_dir().ok_or_else(|| {
            anyhow::anyhow!(
                "no golden files found ($LENET_GOLDEN, golden/ beside the executable, ./tests/golden); \
                 give --golden DIR"
            )
        })?,
    };
    let dev = device(a.device);
    let name = a
        .device
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned());
    println!(
        "host check: device {name} against PyTorch's golden records in {}",
        dir.display()
    );
    let lines = crate::check::run(dev, &dir, &a.only, a.one_step, a.full, &mut |l| {
        println!("{l}")
    })
    .map_err(anyhow::Error::msg)?;
    let failed = lines.iter().filter(|l| l.result.is_err()).count();
    if lines.is_empty() {
        bail!("--only {}: no record group matches", a.only.join(","));
    }
    if failed > 0 {
        bail!("{failed} of {} checks failed", lines.len());
    }
    let na = lines
        .iter()
        .filter(|l| matches!(l.result, Ok(None)))
        .count();
    if na > 0 {
        println!(
            "all {} checks passed ({na} not applicable)",
            lines.len() - na
        );
    } else {
        println!("all {} checks passed", lines.len());
    }
    Ok(())
}

fn cmd_train(a: TrainArgs) -> Result<()> {
    let (resume, settings) = match &a.resume {
        Some(p) => {
            let ignored: Vec<String> = a
                .explicit
                .iter()
                .filter(|f| !RESUME_FLAGS.contains(&f.as_str()))
                .map(|f| format!("--{}", f.replace('_', "-")))
                .collect();
            if !ignored.is_empty() {
                bail!(
                    "{}: a resumed run keeps the checkpoint's settings, so {} cannot be given with --resume \
                     (allowed: --epochs, --threads, --out, --data, --split-seed, --device)",
                    p.display(),
                    ignored.join(", ")
                );
            }
            let (f, mut s) = resume_settings(p, None)?;
            eprintln!("resuming {} (settings from the checkpoint)", p.display());
            if let Some(e) = a.epochs.filter(|&e| e != s.epochs) {
                if s.schedule != "constant" {
                    eprintln!(
                        "note: {e} epochs instead of {}: the {} schedule is stretched from here on, \
                         so the run differs from an uninterrupted {}-epoch one",
                        s.epochs, s.schedule, s.epochs
                    );
                }
                s.epochs = e;
            }
            if let Some(t) = a.threads.filter(|&t| t != s.threads) {
                eprintln!(
                    "note: {t} threads instead of the checkpoint's {}: not bit-identical to an uninterrupted run",
                    s.threads
                );
                s.threads = t;
            }
            (Some(f), s)
        }
        None => (None, new_settings(&a)?),
    };
    let cfg = settings.trainer_config(settings.threads)?;
    let out = match (&a.out, &a.resume) {
        (Some(o), _) => o.clone(),
        (None, Some(r)) => r.parent().map(Path::to_owned).unwrap_or_default(),
        (None, None) => PathBuf::from(format!("runs/{}-{}", settings.model, settings.act)),
    };
    let data = load_data(&a.data)?;
    let dev = device(a.device);
    if runs_on_cpu(dev) {
        backend::check_cpu_memory(
            cfg.arch,
            RunKind::Train(cfg.optimizer),
            cfg.threads,
            settings.batch_size,
            data.train.len() + data.test.len(),
            "training",
        )?;
    }
    let (mut trainer, note) = backend::make_trainer(dev, &cfg, settings.seed)?;
    eprintln!("{note}");
    eprintln!(
        "model {} act {} optimizer {} lr {} ({}) batch {} epochs {} -> {}",
        settings.model,
        settings.act,
        settings.optimizer,
        settings.lr,
        settings.schedule,
        settings.batch_size,
        settings.epochs,
        out.display()
    );
    crate::train::interrupt::install().context("installing the Ctrl-C handler")?;
    let summary = train(
        trainer.as_mut(),
        &settings,
        &data,
        &out,
        resume.as_ref(),
        &mut |l| println!("{l}"),
    )
    .map_err(|e| match e {
        TrainError::Interrupted {
            checkpoint: Some(ref ck),
            ..
        } => anyhow::Error::new(Interrupted(format!(
            "{e}\nresume with: {}",
            resume_command(ck, &a)
        ))),
        TrainError::Interrupted { .. } => anyhow::Error::new(Interrupted(e.to_string())),
        e => e.into(),
    })?;
    println!(
        "test accuracy {:.2}%  model {}",
        100.0 * summary.test.accuracy,
        summary.model_path.display()
    );
    Ok(())
}

/// A run stopped by Ctrl-C or SIGTERM after saving its progress: `main`
/// exits with [`EXIT_INTERRUPTED`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

/// Exit status of a run stopped by Ctrl-C (128 + SIGINT, as a shell reports it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// The exit status for error `e`: [`EXIT_INTERRUPTED`] after Ctrl-C, 1
/// otherwise.
pub fn exit_status(e: &anyhow::Error) -> u8 {
    if e.is::<Interrupted>() {
        EXIT_INTERRUPTED
    } else {
        1
    }
}

/// `s` quoted for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The command line that resumes checkpoint `ck` of the run started with `a`:
/// the data, device and thread count as given (the rest is in the
/// checkpoint).
fn resume_command(ck: &Path, a: &TrainArgs) -> String {
    let mut v = vec![
        "host".to_string(),
        "train".into(),
        "--resume".into(),
        shell_quote(&ck.to_string_lossy()),
    ];
    if let Some(d) = &a.data.data {
        v.push("--data".into());
        v.push(shell_quote(&d.to_string_lossy()));
    }
    if a.data.split_seed != 0 {
        v.push("--split-seed".into());
        v.push(a.data.split_seed.to_string());
    }
    if a.explicit.iter().any(|f| f == "device") {
        v.push("--device".into());
        v.push(
            a.device
                .to_possible_value()
                .map_or_else(String::new, |p| p.get_name().to_string()),
        );
    }
    if let Some(t) = a.threads {
        v.push("--threads".into());
        v.push(t.to_string());
    }
    if let Some(e) = a.epochs.filter(|_| a.resume.is_some()) {
        v.push("--epochs".into());
        v.push(e.to_string());
    }
    v.join(" ")
}

/// Whether `dev` runs on the CPU back end (`auto` without a usable CUDA).
fn runs_on_cpu(dev: Device) -> bool {
    match dev {
        Device::Cpu => true,
        Device::Auto => backend::cuda_status().is_err(),
        Device::CpuReference | Device::Cuda | Device::CudaEmu => false,
    }
}

/// The settings of a new run (not `--resume`) from the command line.
///
/// # Errors
/// A network option given to a model that does not have it.
pub fn new_settings(a: &TrainArgs) -> Result<TrainSettings> {
    let norm = a.normalize.norm();
    let lenet = a.model.is_lenet();
    let act = a
        .act
        .unwrap_or(if lenet { ActArg::Sigmoid } else { ActArg::Relu });
    Ok(TrainSettings {
        model: a.model.name().into(),
        net: a.net.options(a.model)?,
        act: act_name(core_act(act)).into(),
        optimizer: match a.optimizer {
            OptimizerArg::Adam => "adam",
            OptimizerArg::Sgd => "sgd",
        }
        .into(),
        lr: a.lr.unwrap_or(if lenet { 5e-3 } else { 1e-3 }),
        momentum: a.momentum,
        weight_decay: a.weight_decay,
        epochs: a.epochs.unwrap_or(crate::train::DEFAULT_EPOCHS),
        batch_size: a.batch_size,
        seed: a.seed,
        val_split: a.val_split,
        augment: a.augment,
        shift: a.shift,
        norm_mean: norm.mean,
        norm_std: norm.std,
        limit_train: a.limit_train,
        limit_test: a.limit_test,
        threads: match a.threads {
            Some(t) if t > 0 => t,
            _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
        schedule: match a.schedule {
            ScheduleArg::Constant => "constant",
            ScheduleArg::Cosine => "cosine",
        }
        .into(),
        warmup_epochs: a.warmup_epochs,
        exclude_classes: a.exclude_classes.clone(),
    })
}

fn load_model(p: &Path) -> Result<(PathBuf, ModelFile)> {
    let path = model_path(p);
    let m = ModelFile::load(&path)?;
    Ok((path, m))
}

/// The int8 architecture of `m` (loaded from `path`), checked before any
/// slow work starts.
fn quant_arch(path: &Path, m: &ModelFile) -> Result<lenet_core::quant::QuantArch> {
    lenet_kind(path, m)?
        .try_into()
        .with_context(|| format!("cannot quantize {}", path.display()))
}

/// The LeNet kind of `m`, for the int8 path (which only the LeNets have).
fn lenet_kind(path: &Path, m: &ModelFile) -> Result<lenet_core::model::ModelKind> {
    m.meta.arch.lenet().with_context(|| {
        format!(
            "{}: holds {}; the int8 path is for the LeNet models only",
            path.display(),
            m.meta.arch
        )
    })
}

fn cmd_eval(a: EvalArgs) -> Result<()> {
    check_threads(a.threads)?;
    if a.calibration == 0 {
        bail!("--calibration must be at least 1 image");
    }
    let (path, m) = load_model(&a.model)?;
    if a.int8 {
        quant_arch(&path, &m)?;
    }
    // The .q8 trunk and the head are read and checked before the data.
    let q8 = match &a.q8 {
        Some(f) => {
            let q = crate::int8::read_q8(f)?;
            let want = quant_arch(&path, &m)?;
            if q.arch() != want {
                bail!(
                    "{}: an int8 {:?} trunk, but --model {} holds {} ({} parameters); \
                     give the .q8 exported from that model",
                    f.display(),
                    q.arch(),
                    path.display(),
                    m.meta.arch,
                    m.params.len()
                );
            }
            Some(q)
        }
        None => None,
    };
    let head = match (&a.q8, &a.head) {
        (Some(f), Some(h)) => Some(read_head_file(q8.as_deref().expect("read above"), f, h)?),
        _ => None,
    };
    let data = load_data(&a.data)?;
    let all = if a.train_set { &data.train } else { &data.test };
    let limited;
    let ds = if a.limit > 0 {
        limited = all.take(a.limit);
        &limited
    } else {
        all
    };
    if ds.is_empty() {
        bail!(
            "{}: the {} set is empty; nothing to evaluate",
            a.data
                .data
                .as_deref()
                .unwrap_or(Path::new("data"))
                .display(),
            if a.train_set { "training" } else { "test" }
        );
    }
    backend::check_cpu_memory(
        m.meta.arch,
        RunKind::Infer,
        a.threads,
        1000,
        data.train.len() + data.test.len(),
        "evaluation",
    )?;
    let mut t = backend::inference_trainer(m.meta.arch, m.meta.act, &m.params, a.threads)?;
    let r = evaluate(t.as_mut(), ds, m.meta.norm, 1000)?;
    println!(
        "{} ({} {}) on the {} set",
        path.display(),
        m.meta.arch,
        act_name(m.meta.act),
        if a.train_set { "training" } else { "test" }
    );
    print!("{}", r.render());
    if a.int8 {
        let q = match q8 {
            Some(q) => q,
            None => quantize_model(&m, a.calibration, &data.train)?,
        };
        let c = crate::int8::compare(&q, &m.params, &ds.images, &ds.labels)
            .with_context(|| path.display().to_string())?;
        println!(
            "int8 ({}): accuracy {:.2}%  (float {:.2}%, {:+.2} pp; same prediction on {:.2}%)",
            match &a.q8 {
                Some(f) => f.display().to_string(),
                None => format!(
                    "calibrated on {} training images",
                    a.calibration.min(data.train.len())
                ),
            },
            100.0 * c.int8.accuracy(),
            100.0 * c.float.accuracy(),
            100.0 * (c.int8.accuracy() - c.float.accuracy()),
            100.0 * c.agree as f64 / ds.len().max(1) as f64
        );
        if let (Some(h), Some(head)) = (&a.head, head) {
            eval_head(&q, &head, h, ds)?;
        }
    }
    Ok(())
}

/// A head file learned on a device, with the trunk CRC it must carry:
/// read up to the largest head file's size (a longer file is refused by
/// its size, a device after that many bytes, a FIFO at once) and parsed
/// against the trunk `q` read from `q8`, so a head with another trunk,
/// parameter count, or a NaN, infinite or huge value is refused before the
/// data is loaded, naming the file.
struct HeadFile {
    bytes: Vec<u8>,
    trunk_crc: u32,
}

fn read_head_file(q: &lenet_core::quant::QuantModel, q8: &Path, head: &Path) -> Result<HeadFile> {
    use lenet_core::head::{Fc23Head, Head, head_file_len};
    let trunk = crate::fsutil::read_capped(q8, crate::int8::MAX_Q8_LEN)
        .with_context(|| q8.display().to_string())?;
    let trunk_crc = u32::from_le_bytes(trunk[trunk.len().saturating_sub(4)..].try_into()?);
    let max = head_file_len(&Fc23Head::ZERO) as u64;
    let bytes =
        crate::fsutil::read_capped(head, max).with_context(|| head.display().to_string())?;
    // Parse it once now (on no images) so every check runs before the data.
    crate::int8::predict_with_head(q, trunk_crc, &bytes, &[])
        .with_context(|| head.display().to_string())?;
    Ok(HeadFile { bytes, trunk_crc })
}

/// Accuracy, overall and per class, of the int8 trunk `q` with the head
/// file `h` (read from `head`).
fn eval_head(
    q: &lenet_core::quant::QuantModel,
    h: &HeadFile,
    head: &Path,
    ds: &data::Dataset,
) -> Result<()> {
    let pred = crate::int8::predict_with_head(q, h.trunk_crc, &h.bytes, &ds.images)
        .with_context(|| head.display().to_string())?;
    let mut right = [0usize; data::CLASSES];
    let mut seen = [0usize; data::CLASSES];
    for (&p, &l) in pred.iter().zip(&ds.labels) {
        seen[usize::from(l)] += 1;
        right[usize::from(l)] += usize::from(p == l);
    }
    let pc = |r: usize, n: usize| 100.0 * r as f64 / n.max(1) as f64;
    println!(
        "int8 trunk + head ({}): accuracy {:.2}%",
        head.display(),
        pc(right.iter().sum(), seen.iter().sum())
    );
    for (c, name) in data::CLASS_NAMES.iter().enumerate() {
        println!("  {name:>12}  {:6.2}%", pc(right[c], seen[c]));
    }
    Ok(())
}

/// Quantizes `m`, calibrating on the first `calibration` images of `train`.
fn quantize_model(
    m: &ModelFile,
    calibration: usize,
    train: &data::Dataset,
) -> Result<Box<lenet_core::quant::QuantModel>> {
    let n = calibration.min(train.len());
    if n == 0 {
        bail!("no training images to calibrate the int8 ranges on");
    }
    crate::int8::quantize(
        m.meta
            .arch
            .lenet()
            .context("the int8 path is for the LeNet models only")?
            .try_into()?,
        m.meta.act.into(),
        &m.params,
        &train.images[..n * data::PIXELS],
        m.meta.norm.mean,
        m.meta.norm.std,
    )
}

fn cmd_predict(a: PredictArgs) -> Result<()> {
    let (_, m) = load_model(&a.model)?;
    let mut inputs = Vec::new();
    if a.index.is_empty() {
        for p in &a.images {
            inputs.push((p.display().to_string(), load_image(p)?, None));
        }
    } else {
        let test = load_data(&a.data)?.test;
        for &i in &a.index {
            if i >= test.len() {
                bail!("--index {i}: the test set has {} samples", test.len());
            }
            inputs.push((
                format!("test[{i}]"),
                test.image(i).to_vec(),
                Some(test.labels[i] as usize),
            ));
        }
    }
    backend::check_cpu_memory(
        m.meta.arch,
        RunKind::Infer,
        0,
        inputs.len(),
        0,
        "prediction",
    )?;
    let mut t = backend::inference_trainer(m.meta.arch, m.meta.act, &m.params, 0)?;
    let preds = predict(t.as_mut(), m.meta.norm, &inputs)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&preds)?);
    } else {
        for p in &preds {
            println!("{}", p.render());
        }
    }
    Ok(())
}

fn cmd_export(a: ExportArgs) -> Result<()> {
    let (path, m) = load_model(&a.model)?;
    if a.int8 {
        return export_int8(&path, &m, a.out, a.calibration, &a.exclude_classes, &a.data);
    }
    let out = a.out.unwrap_or_else(|| path.with_extension("safetensors"));
    export_safetensors(&out, &m)?;
    let say = reporter(&out);
    say(format!(
        "wrote {} ({} parameters)",
        out.display(),
        m.params.len()
    ));
    if a.print_pytorch {
        say(pytorch_snippet(m.meta.arch, m.meta.act, m.meta.norm)
            .trim_end()
            .to_string());
    }
    Ok(())
}

/// Prints report lines to stdout, or to stderr when `out` is stdout (where
/// the file's bytes go).
fn reporter(out: &Path) -> fn(String) {
    if crate::fsutil::is_stdout(out) {
        |l| eprintln!("{l}")
    } else {
        |l| println!("{l}")
    }
}

fn export_int8(
    path: &Path,
    m: &ModelFile,
    out: Option<PathBuf>,
    calibration: usize,
    exclude: &[u8],
    d: &DataArg,
) -> Result<()> {
    use crate::int8::{compare, write_q8};
    quant_arch(path, m)?;
    if calibration == 0 {
        bail!("--calibration must be at least 1 image");
    }
    let data = load_data(d)?;
    let kept;
    let train = if exclude.is_empty() {
        &data.train
    } else {
        let keep: Vec<usize> = (0..data.train.len())
            .filter(|&i| !exclude.contains(&data.train.labels[i]))
            .collect();
        kept = data.train.select(&keep);
        &kept
    };
    if train.is_empty() {
        bail!("--exclude-classes leaves no training image to calibrate on");
    }
    let n = calibration.min(train.len());
    let q = quantize_model(m, calibration, train)?;
    let out = out.unwrap_or_else(|| path.with_extension("q8"));
    write_q8(&out, &q)?;
    let say = reporter(&out);
    say(format!(
        "wrote {} (int8, calibrated on {n} training images)",
        out.display()
    ));
    let c = compare(&q, &m.params, &data.test.images, &data.test.labels)?;
    say(format!(
        "test accuracy: float {:.2}%  int8 {:.2}%  (same prediction on {:.2}% of {} images)",
        100.0 * c.float.accuracy(),
        100.0 * c.int8.accuracy(),
        100.0 * c.agree as f64 / data.test.len().max(1) as f64,
        data.test.len()
    ));
    Ok(())
}

fn cmd_import(a: ImportArgs) -> Result<()> {
    let m = import_safetensors(
        &a.input,
        a.act.map(core_act),
        a.normalize.map(NormArg::norm),
    )?;
    m.save(&a.out)?;
    let from = |flag: bool, name: &str| {
        if flag {
            format!("from {name}")
        } else {
            "from the file's metadata".to_string()
        }
    };
    reporter(&a.out)(format!(
        "wrote {} ({}, {} parameters; activation {} {}; input normalization {} {})",
        a.out.display(),
        m.meta.arch,
        m.params.len(),
        act_name(m.meta.act),
        from(a.act.is_some(), "--act"),
        m.meta.norm,
        from(a.normalize.is_some(), "--normalize"),
    ));
    Ok(())
}

/// The network of `--model` with its options.
fn arch_of(model: ModelArg, net: &NetArgs) -> Result<lenet_core::model::Arch> {
    crate::modelfile::arch_from(model.name(), net.options(model)?).map_err(anyhow::Error::msg)
}

fn cmd_models(a: ModelsArgs) -> Result<()> {
    use std::fmt::Write as _;
    let mut out = String::new();
    use lenet_core::model::{AlexNetConfig, Arch, INPUT_SHAPE, ModelKind, VggConfig};
    let human = |n: u64| {
        if n >= 10_000_000_000 {
            format!("{:.1} G", n as f64 / 1e9)
        } else if n >= 10_000_000 {
            format!("{:.1} M", n as f64 / 1e6)
        } else {
            n.to_string()
        }
    };
    if let Some(m) = a.model {
        let arch = arch_of(m, &a.net)?;
        if a.pytorch {
            let act = core_act(a.act.unwrap_or(if m.is_lenet() {
                ActArg::Sigmoid
            } else {
                ActArg::Relu
            }));
            return print_all(&format!("{}\n", crate::export::pytorch_module(arch, act)));
        }
        writeln!(
            out,
            "{arch}: {} parameters, {} MACs per image (forward)",
            arch.num_params(),
            arch.macs()
        )?;
        let mut s = INPUT_SHAPE;
        writeln!(
            out,
            "{:>3}  {:<58} {:>16} {:>10}",
            "#", "layer", "output", "params"
        )?;
        writeln!(
            out,
            "{:>3}  {:<58} {:>16} {:>10}",
            "",
            "input",
            format!("{}x{}x{}", s.c, s.h, s.w),
            ""
        )?;
        for (i, l) in arch.layers().iter().enumerate() {
            s = l.output_shape(s).map_err(anyhow::Error::msg)?;
            writeln!(
                out,
                "{i:>3}  {:<72} {:>12} {:>10}",
                crate::export::torch_layer(*l, "activation"),
                format!("{}x{}x{}", s.c, s.h, s.w),
                l.num_params()
            )?;
        }
        return print_all(&out);
    }
    let small_vgg = VggConfig {
        width_div: 4,
        ..VggConfig::NOTES
    };
    let cpu_vgg = VggConfig {
        blocks: 3,
        width_div: 4,
        size: 28,
        hidden: 512,
    };
    let cpu_alexnet = AlexNetConfig {
        width_div: 4,
        size: 96,
        hidden: 512,
    };
    let rows: Vec<(Arch, &str)> = vec![
        (ModelKind::LeNet5.into(), ""),
        (ModelKind::LeNet5Max.into(), ""),
        (ModelKind::LeNet5Wide.into(), ""),
        (Arch::Cnn, ""),
        (Arch::Vgg(VggConfig::NOTES), ""),
        (Arch::Vgg(small_vgg), "--width-div 4"),
        (
            Arch::Vgg(cpu_vgg),
            "--blocks 3 --width-div 4 --input-size 28 --hidden 512",
        ),
        (Arch::AlexNet(AlexNetConfig::NOTES), ""),
        (
            Arch::AlexNet(cpu_alexnet),
            "--width-div 4 --input-size 96 --hidden 512",
        ),
    ];
    writeln!(
        out,
        "| model | options | input | layers | parameters | forward MACs / image | training FLOPs / image |"
    )?;
    writeln!(out, "|---|---|---|--:|--:|--:|--:|")?;
    for (arch, opts) in rows {
        let side = match arch {
            Arch::Vgg(c) => c.size,
            Arch::AlexNet(c) => c.size,
            _ => 28,
        };
        writeln!(
            out,
            "| `{}` | {} | {side}x{side} | {} | {} | {} | {} |",
            arch.name(),
            if opts.is_empty() {
                "".to_string()
            } else {
                format!("`{opts}`")
            },
            arch.layers().len(),
            arch.num_params(),
            human(arch.macs()),
            human(6 * arch.macs()),
        )?;
    }
    print_all(&out)
}

/// Writes `s` to stdout; a reader that went away (`| head`) is not an
/// error.
fn print_all(s: &str) -> Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(s.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn cmd_fetch(a: FetchArgs) -> Result<()> {
    let mut o = FetchOptions::official(a.dest.clone());
    o.base_url = a.base_url;
    o.force = a.force;
    fetch(&o).with_context(|| format!("fetching into {}", a.dest.display()))?;
    println!("Fashion-MNIST is in {}", a.dest.display());
    Ok(())
}

fn cmd_bench(a: BenchArgs) -> Result<()> {
    use crate::cpu::bench::{BenchConfig, bench, bench_config, measure_gpu};
    if !(a.seconds.is_finite() && a.seconds > 0.0 && a.seconds <= 3600.0) {
        bail!("--seconds {} must be in (0, 3600]", a.seconds);
    }
    if !(1..=MAX_BATCH).contains(&a.batch) {
        bail!("--batch {} must be in 1..={MAX_BATCH}", a.batch);
    }
    check_threads(a.threads)?;
    let arch = arch_of(a.model, &a.net)?;
    let act = core_act(a.act.unwrap_or(if a.model.is_lenet() {
        ActArg::Sigmoid
    } else {
        ActArg::Relu
    }));
    if a.profile {
        return profile(&a, arch, act);
    }
    if runs_on_cpu(device(a.device)) {
        let opt = bench_config(lenet_core::model::ModelKind::LeNet5, act, a.threads).optimizer;
        backend::check_cpu_memory(
            arch,
            RunKind::Train(opt),
            a.threads,
            a.batch,
            0,
            "benchmarking",
        )?;
    }
    let Some(kind) = arch.lenet() else {
        let time = std::time::Duration::from_secs_f64(a.seconds);
        let head = format!(
            "lenet-host {} ({arch}, {} parameters, {}, batch {})",
            env!("CARGO_PKG_VERSION"),
            arch.num_params(),
            act_name(act),
            a.batch
        );
        let dev = match a.device {
            DeviceArg::Cpu | DeviceArg::Auto => {
                let r = crate::cpu::bench::bench_net(arch, act, a.threads, a.batch, time)?;
                println!("{head}: {r}");
                return Ok(());
            }
            DeviceArg::CpuReference => {
                bail!("--device cpu-reference: the reference trainer is not benchmarked")
            }
            DeviceArg::Cuda => Device::Cuda,
            DeviceArg::CudaEmu => Device::CudaEmu,
        };
        if !(1..=1_000_000).contains(&a.epoch_images) {
            bail!("--epoch-images {} must be in 1..=1000000", a.epoch_images);
        }
        let tc = crate::trainer::TrainerConfig {
            arch,
            ..bench_config(lenet_core::model::ModelKind::LeNet5, act, a.threads)
        };
        let (mut t, note) = backend::make_trainer(dev, &tc, 1)?;
        let r = measure_gpu(t.as_mut(), a.batch, time, a.epoch_images)?;
        println!("{head}, {note}: {r}");
        return Ok(());
    };
    let cfg = BenchConfig {
        kind,
        act,
        threads: a.threads,
        batch: a.batch,
        time: std::time::Duration::from_secs_f64(a.seconds),
    };
    let head = format!(
        "lenet-host {} ({}, {}, batch {})",
        env!("CARGO_PKG_VERSION"),
        kind_name(cfg.kind),
        act_name(cfg.act),
        cfg.batch
    );
    let dev = match a.device {
        DeviceArg::Cpu | DeviceArg::Auto => {
            let r = bench(&cfg)?;
            println!("{head}: {r}");
            return Ok(());
        }
        DeviceArg::CpuReference => {
            bail!("--device cpu-reference: the reference trainer is not benchmarked")
        }
        DeviceArg::Cuda => Device::Cuda,
        DeviceArg::CudaEmu => Device::CudaEmu,
    };
    if !(1..=1_000_000).contains(&a.epoch_images) {
        bail!("--epoch-images {} must be in 1..=1000000", a.epoch_images);
    }
    let tc = bench_config(cfg.kind, cfg.act, cfg.threads);
    let (mut t, note) = backend::make_trainer(dev, &tc, 1)?;
    let r = measure_gpu(t.as_mut(), cfg.batch, cfg.time, a.epoch_images)?;
    println!("{head}, {note}: {r}");
    Ok(())
}

/// `host bench --profile`: the kernel table of one step, then throughput.
fn profile(
    a: &BenchArgs,
    arch: lenet_core::model::Arch,
    act: lenet_core::activation::Activation,
) -> Result<()> {
    let dev = match a.device {
        DeviceArg::Cuda => Device::Cuda,
        DeviceArg::CudaEmu => Device::CudaEmu,
        _ => bail!("--profile needs --device cuda or cuda-emu"),
    };
    if !(1..=1_000_000).contains(&a.epoch_images) {
        bail!("--epoch-images {} must be in 1..=1000000", a.epoch_images);
    }
    let tc = crate::trainer::TrainerConfig {
        arch,
        ..crate::cpu::bench::bench_config(lenet_core::model::ModelKind::LeNet5, act, a.threads)
    };
    let time = std::time::Duration::from_secs_f64(a.seconds);
    let report = backend::gpu_profile(dev, &tc, a.batch, time, a.epoch_images)
        .map_err(|e| anyhow::anyhow!("--profile: {e}"))?;
    println!(
        "lenet-host {} ({arch}, {} parameters, {}, batch {})",
        env!("CARGO_PKG_VERSION"),
        arch.num_params(),
        act_name(act),
        a.batch
    );
    println!("{report}");
    Ok(())
}

fn cmd_info(a: DataArg) -> Result<()> {
    match data::locate(a.data.as_deref()) {
        Ok(src) => println!("data: {src}"),
        Err(e) => println!("data: {e}"),
    }
    match backend::cuda_status() {
        Ok(name) => println!("cuda: {name}"),
        Err(why) => println!("cuda: not usable: {why}"),
    }
    println!("cpu threads: {}", rayon::current_num_threads());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent_and_every_flag_has_help() {
        Cli::command().debug_assert();
        fn walk(c: &clap::Command) {
            for a in c.get_arguments() {
                let id = a.get_id().as_str();
                if id != "help" && id != "version" {
                    assert!(
                        a.get_help().is_some(),
                        "{} --{id} has no help",
                        c.get_name()
                    );
                }
            }
            for s in c.get_subcommands() {
                assert!(s.get_about().is_some(), "{} has no help", s.get_name());
                walk(s);
            }
        }
        walk(&Cli::command());
    }

    /// `--resume` with flags it would ignore names exactly those flags
    /// (not the ids of flattened groups such as `NetArgs`).
    #[test]
    fn resume_refuses_flags_naming_the_real_ones() {
        let Command::Train(t) = parse_from([
            "host", "train", "--resume", "ck.lenet", "--blocks", "3", "--hidden", "64", "--data",
            "d", "--lr", "0.1",
        ])
        .unwrap()
        .command
        else {
            panic!("not train")
        };
        let mut got = t.explicit.clone();
        got.sort();
        assert_eq!(got, ["blocks", "data", "hidden", "lr", "resume"]);
        let e = cmd_train(t).unwrap_err().to_string();
        assert!(
            e.starts_with("ck.lenet: ")
                && e.contains("so --blocks, --hidden, --lr cannot be given with --resume"),
            "{e}"
        );
        assert!(!e.contains("NetArgs") && !e.contains("DataArg"), "{e}");
    }

    #[test]
    fn network_options_reach_the_settings_and_are_checked() {
        let parse = |args: &[&str]| {
            let v: Vec<&str> = ["host", "train"].iter().chain(args).copied().collect();
            let Command::Train(t) = Cli::try_parse_from(v).unwrap().command else {
                panic!("train")
            };
            new_settings(&t)
        };
        let s = parse(&[
            "--model",
            "vgg",
            "--blocks",
            "3",
            "--width-div",
            "4",
            "--input-size",
            "28",
        ])
        .unwrap();
        assert_eq!(
            s.arch().unwrap(),
            lenet_core::model::Arch::Vgg(lenet_core::model::VggConfig {
                blocks: 3,
                width_div: 4,
                size: 28,
                hidden: 4096
            })
        );
        // The notes' defaults for the larger networks: ReLU, Adam at 1e-3.
        assert_eq!((s.act.as_str(), s.lr), ("relu", 1e-3));
        let s = parse(&["--model", "cnn"]).unwrap();
        assert_eq!(s.arch().unwrap(), lenet_core::model::Arch::Cnn);
        let e = parse(&["--model", "cnn", "--hidden", "64"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--hidden is an option of vgg and alexnet, not of --model cnn"
        );
        let e = parse(&["--model", "alexnet", "--blocks", "2"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--blocks is an option of vgg, not of --model alexnet"
        );
        // Options that leave no network are refused before any data is read.
        let s = parse(&["--model", "alexnet", "--input-size", "40"]).unwrap();
        let e = s.trainer_config(1).unwrap_err().to_string();
        assert!(e.contains("not a valid network"), "{e}");
        let s = parse(&["--model", "vgg", "--width-div", "0"]).unwrap();
        assert!(s.trainer_config(1).is_err());
    }

    #[test]
    fn train_defaults_are_the_library_defaults() {
        let Command::Train(t) = Cli::try_parse_from(["host", "train"]).unwrap().command else {
            panic!("train")
        };
        let s = new_settings(&t).unwrap();
        assert_eq!(
            s,
            TrainSettings {
                threads: s.threads,
                ..TrainSettings::default()
            }
        );
    }

    #[test]
    fn parses_typical_command_lines() {
        let c = Cli::try_parse_from([
            "host",
            "train",
            "--model",
            "lenet5-max",
            "--act",
            "sigmoid",
            "--optimizer",
            "sgd",
            "--lr",
            "0.1",
            "--epochs",
            "3",
            "--device",
            "cpu",
            "--augment",
            "--normalize",
            "standard",
        ])
        .unwrap();
        let Command::Train(t) = c.command else {
            panic!("train")
        };
        assert_eq!(t.model, ModelArg::Lenet5Max);
        assert_eq!(t.epochs, Some(3));
        assert!(t.augment);
        assert!(
            Cli::try_parse_from(["host", "predict", "--model", "m"]).is_err(),
            "needs images or --index"
        );
        assert!(
            Cli::try_parse_from(["host", "predict", "--model", "m", "--index", "3", "--json"])
                .is_ok()
        );
        assert!(Cli::try_parse_from(["host", "train", "--act", "gelu"]).is_err());
        let Command::Train(t) = Cli::try_parse_from(["host", "train", "--exclude-classes", "5,8"])
            .unwrap()
            .command
        else {
            panic!("train")
        };
        assert_eq!(new_settings(&t).unwrap().exclude_classes, [5, 8]);
        assert!(Cli::try_parse_from(["host", "train", "--exclude-classes", "10"]).is_err());
        let export = [
            "host",
            "export",
            "--model",
            "m",
            "--int8",
            "--exclude-classes",
            "5,8",
        ];
        let Command::Export(e) = Cli::try_parse_from(export).unwrap().command else {
            panic!("export")
        };
        assert_eq!(e.exclude_classes, [5, 8]);
        assert!(
            Cli::try_parse_from(["host", "export", "--model", "m", "--exclude-classes", "5"])
                .is_err()
        );
    }

    #[test]
    fn errors_print_each_cause_once() {
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let e = anyhow::Error::new(crate::modelfile::ModelFileError::Io {
            path: PathBuf::from("m.lenet"),
            source: io,
        });
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        assert_eq!(chain.len(), 2, "the I/O error is also the source");
        let line = error_message(&e);
        assert_eq!(line, chain[0], "{line}");
        assert_eq!(line.matches("ermission denied").count(), 1, "{line}");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_message(&e), "outer: inner");
    }

    #[test]
    fn every_model_kind_has_a_cli_name() {
        for kind in lenet_core::model::ModelKind::ALL {
            let arg = ModelArg::from_str(kind.name(), false).unwrap();
            assert_eq!(arg.name(), kind.name());
        }
    }

    #[test]
    fn every_model_kind_has_an_int8_architecture() {
        use lenet_core::model::ModelKind;
        let m = ModelFile {
            meta: crate::modelfile::ModelMeta {
                arch: ModelKind::LeNet5Wide.into(),
                act: lenet_core::activation::Activation::Relu,
                norm: Normalization::STANDARD,
            },
            params: vec![0.0; ModelKind::LeNet5Wide.num_params()],
            checkpoint: None,
        };
        assert!(quant_arch(Path::new("m"), &m).is_ok());
        let mut m = m;
        m.meta.arch = ModelKind::LeNet5Max.into();
        assert!(quant_arch(Path::new("m"), &m).is_ok());
    }
}
