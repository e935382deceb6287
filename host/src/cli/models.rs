//! `host models`: the table of networks, or one network layer by layer.

use anyhow::Result;
use clap::Args;

use super::args::{ActArg, ModelArg, NetArgs, act_or_default};
use super::print_all;

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

/// `host models`.
pub(super) fn run(a: ModelsArgs) -> Result<()> {
    use std::fmt::Write as _;
    let mut out = String::new();
    use lenet_core::model::{AlexNetConfig, Arch, FAMILIES, INPUT_SHAPE, VggConfig};
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
        let arch = a.net.arch(m)?;
        if a.pytorch {
            let act = act_or_default(a.act, m);
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
    // Every family as the notes define it, and after VGG and AlexNet the
    // smaller versions the notes (and a CPU) train.
    let mut rows: Vec<(Arch, &str)> = Vec::new();
    for f in FAMILIES {
        rows.push((f.base, ""));
        match f.base {
            Arch::Vgg(_) => {
                rows.push((Arch::Vgg(small_vgg), "--width-div 4"));
                rows.push((
                    Arch::Vgg(cpu_vgg),
                    "--blocks 3 --width-div 4 --input-size 28 --hidden 512",
                ));
            }
            Arch::AlexNet(_) => rows.push((
                Arch::AlexNet(cpu_alexnet),
                "--width-div 4 --input-size 96 --hidden 512",
            )),
            Arch::LeNet(_) | Arch::Cnn => {}
        }
    }
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
