//! File-system helpers: crash-safe writes and size-capped reads.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Environment variable naming a write point at which the process kills
/// itself with `SIGKILL` (`abort` off Unix), for the crash tests: `NAME` or `NAME@N` (the N-th
/// time that point is reached, counting from 1). Points: `tmp-written`
/// (temporary file complete and fsynced, not yet renamed), `renamed`
/// (renamed, directory not yet fsynced), `done` (the write is durable); each
/// is qualified by the file name, e.g. `renamed:model.lenet@3`.
pub const CRASH_ENV: &str = "LENET_CRASH_AT";

/// Kills the process if [`CRASH_ENV`] names `point` (see there).
///
/// A no-op unless the variable is set; the count is kept per process.
pub fn crash_point(point: &str) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static HITS: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);
    let Some(want) = std::env::var_os(CRASH_ENV) else {
        return;
    };
    let want = want.to_string_lossy();
    let (name, nth) = match want.rsplit_once('@') {
        Some((n, k)) => (n, k.parse::<u64>().unwrap_or(1)),
        None => (&*want, 1),
    };
    if name != point {
        return;
    }
    let mut g = HITS.lock().unwrap_or_else(|e| e.into_inner());
    let c = g
        .get_or_insert_with(HashMap::new)
        .entry(point.to_owned())
        .or_insert(0);
    *c += 1;
    if *c == nth {
        die();
    }
}

/// Ends the process at once, as `kill -9` does: no destructors, no
/// flushing, nothing after this point happens.
fn die() -> ! {
    #[cfg(unix)]
    {
        unsafe extern "C" {
            fn kill(pid: i32, sig: i32) -> i32;
        }
        // SAFETY: kill(2) on our own pid with SIGKILL (9) has no
        // preconditions; it does not return.
        unsafe {
            kill(std::process::id() as i32, 9);
        }
    }
    std::process::abort()
}

const TMP_MARK: &str = ".tmp.";

/// The temporary sibling `write_atomic` writes first: `.NAME.tmp.PID` in the
/// same directory (same file system, so the rename is atomic).
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}{TMP_MARK}{}", std::process::id()))
}

/// Whether process `pid` may still be running (Linux: `/proc/PID` exists;
/// elsewhere every other process is assumed gone).
fn pid_alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the temporary siblings of `path` (`.NAME.tmp.PID`) left by
/// processes that are no longer running (a killed writer never renames or
/// deletes its temporary file). Returns how many were removed.
pub fn remove_stale_temps(path: &Path) -> usize {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return 0;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}{TMP_MARK}", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        let Some(pid) = n.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !pid_alive(pid) && fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// `fsync`s the directory holding `path`, so a rename into it survives a
/// power cut (a no-op where directories cannot be opened, as on Windows).
///
/// # Errors
/// The directory cannot be opened or synced.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match File::open(dir) {
        Ok(d) => d.sync_all(),
        Err(_) if cfg!(not(unix)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path` so that readers see either the old file or the
/// whole new one, never a torn one, and the new one survives a crash once
/// this returns: write a temporary sibling, `fsync` it, rename it over
/// `path`, `fsync` the directory. Stale temporary siblings of `path` left by
/// killed processes are removed first.
///
/// # Errors
/// Any I/O error; the temporary file is removed on failure.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    remove_stale_temps(path);
    let tmp = temp_sibling(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        crash_point(&format!("tmp-written:{name}"));
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    crash_point(&format!("renamed:{name}"));
    sync_parent(path)?;
    crash_point(&format!("done:{name}"));
    Ok(())
}

/// Reads a whole file of at most `max` bytes; a larger file (or one that
/// grows past `max` while read, like `/dev/zero`) is an
/// [`io::ErrorKind::InvalidData`] error saying so, after reading at most
/// `max + 1` bytes.
///
/// # Errors
/// I/O errors, or the size limit.
pub fn read_capped(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let hint = f.metadata().map(|m| m.len()).unwrap_or(0);
    if hint > max {
        return Err(too_large(hint, max));
    }
    let mut out = Vec::with_capacity(hint as usize);
    f.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(too_large(out.len() as u64, max));
    }
    Ok(out)
}

fn too_large(found: u64, max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("larger than the {max}-byte limit for this kind of file ({found}+ bytes)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_file_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.bin");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
        // A directory that does not exist fails cleanly.
        assert!(write_atomic(&d.path().join("no/such/f"), b"x").is_err());
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("model.lenet");
        // PIDs above the Linux maximum (4194304) never run.
        let stale = d.path().join(".model.lenet.tmp.99999999");
        let other = d.path().join(".metrics.csv.tmp.99999999");
        for f in [&stale, &other] {
            fs::write(f, b"x").unwrap();
        }
        write_atomic(&p, b"new").unwrap();
        assert!(!stale.exists(), "stale temporary removed");
        assert!(
            other.exists(),
            "another file's temporary is left to its writer"
        );
        assert_eq!(fs::read(&p).unwrap(), b"new");
    }

    #[test]
    fn capped_reads_stop_at_the_limit() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, [7u8; 100]).unwrap();
        assert_eq!(read_capped(&p, 100).unwrap().len(), 100);
        let e = read_capped(&p, 99).unwrap_err();
        assert!(e.to_string().contains("99-byte limit"), "{e}");
        #[cfg(target_os = "linux")]
        {
            let e = read_capped(Path::new("/dev/zero"), 1 << 20).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        }
    }
}
