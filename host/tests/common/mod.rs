//! What the resume tests (`kill_resume.rs`, `interrupt_resume.rs`) share:
//! a run's output files, read for a byte-for-byte comparison with the
//! wall-clock values masked.

use std::path::Path;

use lenet_host::modelfile::ModelFile;
use lenet_host::train::files;

/// `json` with the values of the wall-clock fields (`seconds`,
/// `images_per_sec`) replaced by `0`, as text: nothing else is parsed or
/// written again, so every other digit is compared as the run wrote it.
fn mask_clock(json: &str) -> String {
    let mut s = json.to_string();
    for key in ["\"seconds\":", "\"images_per_sec\":"] {
        let mut out = String::new();
        let mut rest = s.as_str();
        while let Some(i) = rest.find(key) {
            out.push_str(&rest[..i + key.len()]);
            rest = &rest[i + key.len()..];
            let end = rest.find([',', '}']).expect("a JSON number ends");
            out.push('0');
            rest = &rest[end..];
        }
        out.push_str(rest);
        s = out;
    }
    s
}

/// Every output file, byte for byte, except the wall-clock values: the
/// last two columns of the metrics, and those two fields of the
/// checkpoint's JSON (masked as text; the checkpoint is otherwise its own
/// bytes, which re-encoding reproduces exactly).
pub fn outputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let b = std::fs::read(dir.join(&n)).unwrap();
            let b = match n.as_str() {
                files::METRICS => String::from_utf8(b)
                    .unwrap()
                    .lines()
                    .map(|l| l.rsplitn(3, ',').nth(2).unwrap().to_string() + "\n")
                    .collect::<String>()
                    .into_bytes(),
                files::CHECKPOINT => {
                    let mut f = ModelFile::from_bytes(Path::new(&n), &b).unwrap();
                    assert!(f.to_bytes() == b, "{n}: re-encoding is not exact");
                    let c = f.checkpoint.as_mut().unwrap();
                    c.json = mask_clock(&c.json);
                    f.to_bytes()
                }
                _ => b,
            };
            (n, b)
        })
        .collect()
}
