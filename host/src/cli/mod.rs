//! Command-line interface: the clap top level and the dispatch to one
//! module per subcommand, each of which parses its arguments, calls the
//! library and prints.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::data;
use crate::modelfile::ModelFile;
use crate::train::MAX_THREADS;

mod args;
mod bench;
mod check;
mod eval;
mod export;
mod fetch;
mod import;
mod info;
mod models;
mod predict;
mod train;

pub use args::{ActArg, DataArg, DeviceArg, ModelArg, NetArgs, NormArg, OptimizerArg, ScheduleArg};
pub use bench::BenchArgs;
pub use check::CheckArgs;
pub use eval::EvalArgs;
pub use export::ExportArgs;
pub use fetch::FetchArgs;
pub use import::ImportArgs;
pub use models::ModelsArgs;
pub use predict::PredictArgs;
pub use train::{EXIT_INTERRUPTED, Interrupted, TrainArgs, new_settings};

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

/// The exit status for error `e`: [`EXIT_INTERRUPTED`] after Ctrl-C, 1
/// otherwise.
pub fn exit_status(e: &anyhow::Error) -> u8 {
    if e.is::<Interrupted>() {
        EXIT_INTERRUPTED
    } else {
        1
    }
}

/// Runs a parsed command line.
///
/// # Errors
/// Whatever the command reports; printed by `main`.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Export(a) => export::run(a),
        Command::Import(a) => import::run(a),
        Command::Fetch(a) => fetch::run(a),
        Command::Info(a) => info::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Models(a) => models::run(a),
        Command::Check(a) => check::run(a),
    }
}

/// Refuses a `--threads` above [`MAX_THREADS`].
fn check_threads(t: usize) -> Result<()> {
    if t > MAX_THREADS {
        bail!("--threads {t} must be at most {MAX_THREADS}");
    }
    Ok(())
}

/// Loads the dataset, saying where it is.
fn load_data(d: &DataArg) -> Result<data::Splits> {
    let src = data::locate(d.data.as_deref())?;
    eprintln!("data: {src}");
    Ok(data::load(&src, d.split_seed)?)
}

/// The model file at `p` (or in the training output directory `p`), and
/// its path.
fn load_model(p: &Path) -> Result<(PathBuf, ModelFile)> {
    let path = crate::train::files::model_path(p);
    let m = ModelFile::load(&path)?;
    Ok((path, m))
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

/// Writes `s` to stdout; a reader that went away (`| head`) is not an
/// error.
fn print_all(s: &str) -> Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(s.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(t.model.name(), "lenet5-max");
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
        use clap::ValueEnum;
        for kind in lenet_core::model::ModelKind::ALL {
            let arg = ModelArg::from_str(kind.name(), false).unwrap();
            assert_eq!(arg.name(), kind.name());
        }
        for f in lenet_core::model::FAMILIES {
            assert_eq!(ModelArg::from_str(f.name, false).unwrap().0, f);
        }
    }
}
