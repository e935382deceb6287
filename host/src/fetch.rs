//! `host fetch`: downloads the four official Fashion-MNIST files and checks
//! them against the MD5 sums published in the dataset's README
//! (github.com/zalandoresearch/fashion-mnist).
//!
//! Each file goes to `NAME.part` beside its destination, is hashed while it
//! streams, and is renamed into place only when the sum matches, so an
//! interrupted or corrupt download never leaves a file that looks complete.
//!
//! Note: the copies shipped by the Debian package `dataset-fashion-mnist` are
//! recompressed (their gzip headers differ), so their `.gz` sums differ from
//! the published ones although the decompressed IDX bytes are the dataset;
//! `host fetch` checks what it downloads from the official mirror.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};

use crate::progress::{Progress, Unit};

/// The official mirror (plain http, as published by Zalando Research).
pub const OFFICIAL_BASE_URL: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";

/// A file to fetch and its expected MD5 (lowercase hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    /// File name, appended to the base URL and the destination directory.
    pub name: String,
    /// Expected MD5 of the downloaded bytes.
    pub md5: String,
}

/// The four official files with their published MD5 sums.
pub fn official_files() -> Vec<RemoteFile> {
    [
        (
            "train-images-idx3-ubyte.gz",
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        ),
        (
            "train-labels-idx1-ubyte.gz",
            "25c81989df183df01b3e8a0aad5dffbe",
        ),
        (
            "t10k-images-idx3-ubyte.gz",
            "bef4ecab320f06d8554ea6380940ec79",
        ),
        (
            "t10k-labels-idx1-ubyte.gz",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
    ]
    .into_iter()
    .map(|(name, md5)| RemoteFile {
        name: name.to_string(),
        md5: md5.to_string(),
    })
    .collect()
}

/// What went wrong during a fetch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The request failed (connection, status, protocol).
    #[error("{url}: {msg}")]
    Http {
        /// The URL.
        url: String,
        /// What happened.
        msg: String,
    },
    /// Local file trouble.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The downloaded bytes do not have the published checksum.
    #[error("{url}: MD5 mismatch: expected {expected}, got {found} (download discarded)")]
    Checksum {
        /// The URL.
        url: String,
        /// Expected sum.
        expected: String,
        /// Sum of what arrived.
        found: String,
    },
}

/// Options of [`fetch`].
#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// Base URL; file names are appended (a `/` is added if missing).
    pub base_url: String,
    /// Destination directory (created if missing).
    pub dest: PathBuf,
    /// Files to fetch.
    pub files: Vec<RemoteFile>,
    /// Download again even if a file with the right sum is present.
    pub force: bool,
    /// Whole-request timeout per file.
    pub timeout: Duration,
    /// Longest wait for any single read or connect: a stalled server fails
    /// after this long instead of after the whole-request timeout.
    pub read_timeout: Duration,
    /// Largest body accepted per file; a longer one (or a `Content-Length`
    /// announcing one) is refused before it fills the disk. The largest
    /// official file is 26,421,880 bytes.
    pub max_bytes: u64,
}

impl FetchOptions {
    /// Official files from the official mirror into `dest`.
    pub fn official(dest: PathBuf) -> Self {
        Self {
            base_url: OFFICIAL_BASE_URL.to_string(),
            dest,
            files: official_files(),
            force: false,
            timeout: Duration::from_secs(600),
            read_timeout: Duration::from_secs(30),
            max_bytes: 32 << 20,
        }
    }
}

/// What happened to one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Downloaded and verified; bytes written.
    Downloaded(u64),
    /// Already present with the right checksum.
    AlreadyPresent,
}

/// MD5 of a file, lowercase hex.
pub fn md5_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Downloads every file of `opts` (see the module docs). Stops at the first
/// error; files completed before it stay.
pub fn fetch(opts: &FetchOptions) -> Result<Vec<(PathBuf, Outcome)>, FetchError> {
    fs::create_dir_all(&opts.dest).map_err(|source| FetchError::Io {
        path: opts.dest.clone(),
        source,
    })?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(opts.timeout))
        .timeout_per_read(Some(opts.read_timeout))
        .timeout_connect(Some(opts.read_timeout))
        .build()
        .into();
    let base = if opts.base_url.ends_with('/') {
        opts.base_url.clone()
    } else {
        format!("{}/", opts.base_url)
    };
    let mut out = Vec::new();
    for f in &opts.files {
        let dest = opts.dest.join(&f.name);
        if !opts.force && dest.is_file() {
            let sum = md5_file(&dest).map_err(|source| FetchError::Io {
                path: dest.clone(),
                source,
            })?;
            if sum == f.md5 {
                eprintln!("{}: present, MD5 ok", dest.display());
                out.push((dest, Outcome::AlreadyPresent));
                continue;
            }
            eprintln!(
                "{}: MD5 {sum} is not the published {}; downloading again",
                dest.display(),
                f.md5
            );
        }
        let n = fetch_one(
            &agent,
            &format!("{base}{}", f.name),
            &dest,
            &f.md5,
            opts.max_bytes,
        )?;
        out.push((dest, Outcome::Downloaded(n)));
    }
    Ok(out)
}

/// Downloads `url` to `dest` through `dest.part`, checking the MD5.
pub fn fetch_one(
    agent: &ureq::Agent,
    url: &str,
    dest: &Path,
    md5: &str,
    max_bytes: u64,
) -> Result<u64, FetchError> {
    let http = |msg: String| FetchError::Http {
        url: url.to_string(),
        msg,
    };
    let mut resp = agent.get(url).call().map_err(|e| http(e.to_string()))?;
    let len = resp.body().content_length();
    if let Some(l) = len.filter(|&l| l > max_bytes) {
        return Err(http(format!(
            "announces {l} bytes, more than the {max_bytes}-byte limit for this file"
        )));
    }
    let part = dest.with_file_name(format!(
        "{}.part",
        dest.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let io_err = |source| FetchError::Io {
        path: part.clone(),
        source,
    };
    let mut w = BufWriter::new(File::create(&part).map_err(io_err)?);
    let mut reader = resp.body_mut().as_reader();
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let label = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut bar = Progress::new(&label, len, Unit::Bytes);
    let mut total = 0u64;
    let result = (|| -> Result<(), FetchError> {
        loop {
            let n = reader.read(&mut buf).map_err(|e| http(e.to_string()))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > max_bytes {
                return Err(http(format!(
                    "more than the {max_bytes}-byte limit for this file; not the official file"
                )));
            }
            h.update(&buf[..n]);
            w.write_all(&buf[..n]).map_err(io_err)?;
            bar.inc(n as u64);
        }
        if let Some(l) = len.filter(|&l| l != total) {
            return Err(http(format!(
                "connection closed after {total} of {l} bytes"
            )));
        }
        w.flush().map_err(io_err)?;
        w.get_ref().sync_all().map_err(io_err)?;
        let found = hex(&h.finalize_reset());
        if found != md5 {
            return Err(FetchError::Checksum {
                url: url.to_string(),
                expected: md5.to_string(),
                found,
            });
        }
        Ok(())
    })();
    drop(w);
    if let Err(e) = result {
        bar.clear();
        let _ = fs::remove_file(&part);
        return Err(e);
    }
    fs::rename(&part, dest)
        .and_then(|()| crate::fsutil::sync_parent(dest))
        .map_err(|source| FetchError::Io {
            path: dest.to_owned(),
            source,
        })?;
    bar.finish(&format!("{:.1} MB, MD5 ok", total as f64 / 1e6));
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::time::Instant;

    /// Serves `files` on 127.0.0.1 from a thread: at most `max_requests`
    /// requests, and never for more than 30 s.
    fn serve(files: HashMap<String, Vec<u8>>, max_requests: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let files = Arc::new(files);
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut served = 0;
            while served < max_requests && Instant::now() < deadline {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                served += 1;
                stream.set_nonblocking(false).unwrap();
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                        break;
                    }
                }
                let path = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .trim_start_matches('/');
                let mut s = stream;
                match files.get(path) {
                    Some(body) => {
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = s.write_all(body);
                    }
                    None => {
                        let _ = write!(
                            s,
                            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                    }
                }
            }
        });
        format!("http://{addr}/base")
    }

    fn md5_of(b: &[u8]) -> String {
        hex(&Md5::digest(b))
    }

    fn opts(base: String, dest: PathBuf, files: &[(&str, &[u8])]) -> FetchOptions {
        FetchOptions {
            base_url: base,
            dest,
            files: files
                .iter()
                .map(|(n, b)| RemoteFile {
                    name: n.to_string(),
                    md5: md5_of(b),
                })
                .collect(),
            force: false,
            timeout: Duration::from_secs(20),
            read_timeout: Duration::from_secs(20),
            max_bytes: 1 << 20,
        }
    }

    #[test]
    fn a_stalled_server_fails_after_the_read_timeout() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // Accepts, sends half a response, then says nothing more.
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc");
                std::thread::sleep(Duration::from_secs(30));
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(
            format!("http://{addr}/"),
            dir.path().to_owned(),
            &[("s.gz", b"x")],
        );
        o.read_timeout = Duration::from_millis(500);
        let t = std::time::Instant::now();
        let e = fetch(&o).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert!(e.to_string().contains("s.gz"), "{e}");
        assert!(!dir.path().join("s.gz.part").exists());
    }

    #[test]
    fn an_oversized_body_is_cut_off() {
        let big = vec![7u8; 300_000];
        let mut files = HashMap::new();
        files.insert("base/big.gz".to_string(), big.clone());
        let base = serve(files, 1);
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(base, dir.path().to_owned(), &[("big.gz", &big)]);
        o.max_bytes = 100_000;
        let e = fetch(&o).unwrap_err().to_string();
        assert!(
            e.contains("100000-byte limit") && e.contains("big.gz"),
            "{e}"
        );
        assert!(!dir.path().join("big.gz").exists());
        assert!(!dir.path().join("big.gz.part").exists());
    }

    #[test]
    fn published_sums_are_well_formed() {
        let f = official_files();
        assert_eq!(f.len(), 4);
        for r in f {
            assert_eq!(r.md5.len(), 32);
            assert!(
                r.md5
                    .bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
    }

    #[test]
    fn downloads_verifies_and_skips_present_files() {
        let a: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let b = b"labels".to_vec();
        let mut files = HashMap::new();
        files.insert("base/a.gz".to_string(), a.clone());
        files.insert("base/b.gz".to_string(), b.clone());
        let base = serve(files, 2);
        let dir = tempfile::tempdir().unwrap();
        let o = opts(base, dir.path().join("sub"), &[("a.gz", &a), ("b.gz", &b)]);
        let got = fetch(&o).unwrap();
        assert_eq!(got[0].1, Outcome::Downloaded(a.len() as u64));
        assert_eq!(fs::read(dir.path().join("sub/a.gz")).unwrap(), a);
        assert_eq!(fs::read(dir.path().join("sub/b.gz")).unwrap(), b);
        assert!(!dir.path().join("sub/a.gz.part").exists());
        // Second run: the server is gone (2 requests served), files are kept.
        let again = fetch(&o).unwrap();
        assert!(again.iter().all(|(_, o)| *o == Outcome::AlreadyPresent));
    }

    #[test]
    fn checksum_mismatch_keeps_no_file() {
        let served = b"tampered bytes".to_vec();
        let mut files = HashMap::new();
        files.insert("base/x.gz".to_string(), served);
        let base = serve(files, 1);
        let dir = tempfile::tempdir().unwrap();
        let o = opts(base, dir.path().to_owned(), &[("x.gz", b"original bytes")]);
        let e = fetch(&o).unwrap_err();
        assert!(matches!(e, FetchError::Checksum { .. }), "{e}");
        assert!(
            e.to_string().contains("x.gz") && e.to_string().contains("MD5 mismatch"),
            "{e}"
        );
        assert!(!dir.path().join("x.gz").exists());
        assert!(!dir.path().join("x.gz.part").exists());
    }

    #[test]
    fn http_error_names_the_url() {
        let base = serve(HashMap::new(), 1);
        let dir = tempfile::tempdir().unwrap();
        let o = opts(base, dir.path().to_owned(), &[("missing.gz", b"")]);
        let e = fetch(&o).unwrap_err();
        assert!(matches!(e, FetchError::Http { .. }), "{e}");
        assert!(
            e.to_string().contains("missing.gz") && e.to_string().contains("404"),
            "{e}"
        );
        assert!(!dir.path().join("missing.gz").exists());
    }
}
