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

/// What [`write_atomic`] does with the path it is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteTarget {
    /// A regular file, or nothing yet: written to a temporary sibling of
    /// this path (the symlink's final target when the path was a symlink)
    /// and renamed over it.
    Replace(PathBuf),
    /// A character device, FIFO or socket (`/dev/null`, a terminal, a pipe
    /// behind `/dev/stdout`): opened and written in place, never replaced.
    Stream(PathBuf),
}

/// Decides how [`write_atomic`] writes `path`, without touching it.
///
/// - Missing or a regular file: replaced through a temporary sibling.
/// - A symlink: followed to its final target, which is then treated by
///   these rules; the link itself stays (a dangling link creates its
///   target). `/dev/stdout`, `/dev/stderr` and `/dev/fd/N` are symlinks to
///   the process's own descriptors: a terminal or pipe there is written
///   through, and a regular file it names is written through too (the
///   shell already opened and truncated it; renaming over it would leave
///   the shell's descriptor pointing at an orphan).
/// - A character device, FIFO or socket: written through in place.
/// - A directory or a block device: refused.
///
/// # Errors
/// [`io::ErrorKind::InvalidInput`] for a directory or block device; other
/// I/O errors from inspecting the path.
pub fn write_target(path: &Path) -> io::Result<WriteTarget> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(WriteTarget::Replace(path.to_path_buf()));
        }
        Err(e) => return Err(e),
    };
    if meta.file_type().is_symlink() {
        let through_fd = is_descriptor_link(path);
        return match fs::metadata(path) {
            // The final target exists: decide by its kind.
            Ok(t) => {
                let kind = classify(path, &t)?;
                match kind {
                    Kind::Regular if through_fd => Ok(WriteTarget::Stream(path.to_path_buf())),
                    Kind::Regular => Ok(WriteTarget::Replace(fs::canonicalize(path)?)),
                    Kind::Special => Ok(WriteTarget::Stream(path.to_path_buf())),
                }
            }
            // A dangling link: create what it points to.
            Err(e) if e.kind() == io::ErrorKind::NotFound && !through_fd => {
                Ok(WriteTarget::Replace(resolve_dangling(path)?))
            }
            Err(e) => Err(e),
        };
    }
    match classify(path, &meta)? {
        Kind::Regular => Ok(WriteTarget::Replace(path.to_path_buf())),
        Kind::Special => Ok(WriteTarget::Stream(path.to_path_buf())),
    }
}

enum Kind {
    Regular,
    Special,
}

fn classify(path: &Path, meta: &fs::Metadata) -> io::Result<Kind> {
    let ft = meta.file_type();
    if ft.is_file() {
        return Ok(Kind::Regular);
    }
    if ft.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is a directory", path.display()),
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_block_device() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is a block device; refusing to write a file over it",
                    path.display()
                ),
            ));
        }
    }
    Ok(Kind::Special)
}

/// Whether `path` is one of the links to the process's own descriptors.
fn is_descriptor_link(path: &Path) -> bool {
    let s = path.to_string_lossy();
    matches!(&*s, "/dev/stdout" | "/dev/stderr" | "/dev/stdin")
        || s.starts_with("/dev/fd/")
        || s.starts_with("/proc/self/fd/")
        || s.starts_with("/proc/thread-self/fd/")
}

/// The path a dangling symlink chain ends at (at most 40 links, as Linux).
fn resolve_dangling(path: &Path) -> io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let t = fs::read_link(&p)?;
                p = match p.parent() {
                    Some(dir) if t.is_relative() => dir.join(t),
                    _ => t,
                };
            }
            Ok(_) => return Ok(p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(p),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{}: too many levels of symbolic links", path.display()),
    ))
}

/// Whether `path` names this process's standard output: `/dev/stdout`,
/// `/dev/fd/1`, `/proc/self/fd/1` (output to it is data, so reports go to
/// stderr).
pub fn is_stdout(path: &Path) -> bool {
    matches!(
        &*path.to_string_lossy(),
        "/dev/stdout" | "/dev/fd/1" | "/proc/self/fd/1" | "/proc/thread-self/fd/1"
    )
}

/// Writes a stream target: this process's stdout and stderr through their
/// own descriptors (so a redirection to a regular file keeps its offset and
/// `O_APPEND`: `>> f` appends, and what the process prints later follows
/// instead of overwriting), anything else with [`write_through`].
fn write_stream(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let s = path.to_string_lossy();
    if is_stdout(path) {
        let mut o = io::stdout().lock();
        o.write_all(bytes)?;
        return o.flush();
    }
    if matches!(
        &*s,
        "/dev/stderr" | "/dev/fd/2" | "/proc/self/fd/2" | "/proc/thread-self/fd/2"
    ) {
        let mut o = io::stderr().lock();
        o.write_all(bytes)?;
        return o.flush();
    }
    write_through(path, bytes)
}

/// Writes `bytes` to a character device, FIFO or socket in place. A FIFO
/// with no reader is an error at once instead of a hang (`O_NONBLOCK` on
/// open, then blocking writes).
fn write_through(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.raw_os_error() == Some(6) {
            // ENXIO: a FIFO with nobody reading it.
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("{}: a FIFO with no reader", path.display()),
            )
        } else {
            e
        }
    })?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let fd = f.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own, with flag arguments only.
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            if fl >= 0 {
                libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
            }
        }
    }
    f.write_all(bytes)?;
    f.flush()
}

/// Writes `bytes` to `path` so that readers see either the old file or the
/// whole new one, never a torn one, and the new one survives a crash once
/// this returns: write a temporary sibling, `fsync` it, rename it over
/// `path`, `fsync` the directory. Stale temporary siblings of `path` left by
/// killed processes are removed first.
///
/// Only a regular file (or a missing one) is ever replaced; see
/// [`write_target`] for symlinks, devices, FIFOs and `/dev/stdout`, which
/// are written through in place.
///
/// # Errors
/// Any I/O error; the temporary file is removed on failure.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let path = match write_target(path)? {
        WriteTarget::Stream(p) => return write_stream(&p, bytes),
        WriteTarget::Replace(p) => p,
    };
    let path = path.as_path();
    remove_stale_temps(path);
    let tmp = temp_sibling(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
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

/// Opens `path` for reading without ever waiting in `open` (a FIFO with
/// no writer would block there for good), and refuses what no reader of
/// this program's files can use: a FIFO or socket (not a regular file; the
/// file itself must be given) and a directory. Regular files and character
/// devices are returned with their metadata, the descriptor back in
/// blocking mode.
///
/// # Errors
/// I/O errors; [`io::ErrorKind::InvalidInput`] for a FIFO, socket or
/// directory.
pub fn open_input(path: &Path) -> io::Result<(File, fs::Metadata)> {
    let mut opts = fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let f = opts.open(path)?;
    let meta = f.metadata()?;
    let refuse = |what: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what}, not a regular file"),
        ))
    };
    if meta.is_dir() {
        return refuse("a directory");
    }
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::FileTypeExt;
        let ft = meta.file_type();
        if ft.is_fifo() {
            return refuse("a FIFO (named pipe)");
        }
        if ft.is_socket() {
            return refuse("a socket");
        }
        let fd = f.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own, with flag arguments only.
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            if fl >= 0 {
                libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
            }
        }
    }
    Ok((f, meta))
}

/// Reads a whole file of at most `max` bytes. A regular file larger than
/// `max` is refused by its size before anything is read; a device that
/// yields more than `max` bytes (like `/dev/zero`) is refused after
/// reading at most `max + 1`; both are [`io::ErrorKind::InvalidData`]
/// errors saying so. FIFOs, sockets and directories are refused without
/// blocking (see [`open_input`]).
///
/// # Errors
/// I/O errors, or the size limit.
pub fn read_capped(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let (f, meta) = open_input(path)?;
    let hint = if meta.is_file() { meta.len() } else { 0 };
    if hint > max {
        return Err(too_large(hint, max));
    }
    read_rest(f, Vec::new(), hint, max)
}

/// Appends what is left of `f` to `out` (which already holds what was read
/// of it), reserving `hint` bytes, refusing a file longer than `max`
/// bytes in all.
///
/// # Errors
/// I/O errors, or the size limit.
pub fn read_rest(f: File, mut out: Vec<u8>, hint: u64, max: u64) -> io::Result<Vec<u8>> {
    let have = out.len() as u64;
    out.reserve(usize::try_from(hint.min(max).saturating_sub(have)).unwrap_or(0));
    f.take((max + 1).saturating_sub(have))
        .read_to_end(&mut out)?;
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

/// An advisory lock (`flock`) on a folder, through the lock file
/// [`DirLock::FILE`] in it, which holds the pid of the process holding it.
/// Released, and the file removed, when dropped; a killed holder's lock is
/// released by the kernel, and its file is taken over by the next run.
/// (Elsewhere than Unix, and on file systems without locks, no lock is
/// taken.)
#[derive(Debug)]
pub struct DirLock {
    path: PathBuf,
    #[cfg(unix)]
    _file: File,
}

/// Why [`DirLock::acquire`] failed.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds the lock.
    Busy {
        /// Its pid, as its lock file says (`None` before it wrote it).
        pid: Option<u32>,
    },
    /// The lock file could not be created or locked.
    Io(io::Error),
}

impl DirLock {
    /// Name of the lock file.
    pub const FILE: &str = ".lock";

    /// Takes the lock on `dir` (which must exist) without waiting.
    ///
    /// # Errors
    /// [`LockError::Busy`] with the holder's pid, or an I/O error.
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        let path = dir.join(Self::FILE);
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            use std::os::unix::fs::MetadataExt;
            loop {
                let mut f = fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .map_err(LockError::Io)?;
                // SAFETY: flock on a descriptor we own.
                if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                    let e = io::Error::last_os_error();
                    let code = e.raw_os_error();
                    if code == Some(libc::ENOLCK) || code == Some(libc::EOPNOTSUPP) {
                        // A file system without locks (some network
                        // mounts): the run goes on unguarded rather than
                        // not at all.
                        return Ok(DirLock { path, _file: f });
                    }
                    if code != Some(libc::EWOULDBLOCK) {
                        return Err(LockError::Io(e));
                    }
                    let mut s = String::new();
                    let _ = f.read_to_string(&mut s);
                    return Err(LockError::Busy {
                        pid: s.trim().parse().ok(),
                    });
                }
                // A holder removes the file before it lets go: the file
                // locked must still be the one at the path, or another
                // process may lock the new one too.
                let same = match (f.metadata(), fs::metadata(&path)) {
                    (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                    _ => false,
                };
                if !same {
                    continue;
                }
                f.set_len(0).map_err(LockError::Io)?;
                f.write_all(format!("{}\n", std::process::id()).as_bytes())
                    .map_err(LockError::Io)?;
                return Ok(DirLock { path, _file: f });
            }
        }
        #[cfg(not(unix))]
        Ok(DirLock { path })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Removed while still locked (the descriptor closes after this).
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_locked_folder_is_refused_with_the_holders_pid() {
        let d = tempfile::tempdir().unwrap();
        let a = DirLock::acquire(d.path()).unwrap();
        let lock = d.path().join(DirLock::FILE);
        assert_eq!(
            fs::read_to_string(&lock).unwrap(),
            format!("{}\n", std::process::id())
        );
        // flock conflicts between two opens even in one process.
        match DirLock::acquire(d.path()) {
            Err(LockError::Busy { pid }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        drop(a);
        assert!(!lock.exists(), "lock file removed on release");
        // A stale file (its holder was killed) is taken over.
        fs::write(&lock, "99999999\n").unwrap();
        let b = DirLock::acquire(d.path()).unwrap();
        assert_eq!(
            fs::read_to_string(&lock).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(b);
    }

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

    #[cfg(unix)]
    #[test]
    fn special_files_are_written_through_never_replaced() {
        use std::os::unix::fs::{FileTypeExt, symlink};
        let d = tempfile::tempdir().unwrap();
        // /dev/null stays a character device.
        write_atomic(Path::new("/dev/null"), b"model bytes").unwrap();
        let m = fs::symlink_metadata("/dev/null").unwrap();
        assert!(m.file_type().is_char_device(), "/dev/null replaced");
        // A symlink to /dev/null: the link stays, the device stays.
        let l = d.path().join("null-link");
        symlink("/dev/null", &l).unwrap();
        write_atomic(&l, b"x").unwrap();
        assert!(fs::symlink_metadata(&l).unwrap().file_type().is_symlink());
        assert!(
            fs::metadata("/dev/null")
                .unwrap()
                .file_type()
                .is_char_device()
        );
        // A symlink to a regular file: the target is replaced, the link kept.
        let target = d.path().join("real.bin");
        fs::write(&target, b"old").unwrap();
        let l2 = d.path().join("link.bin");
        symlink("real.bin", &l2).unwrap();
        write_atomic(&l2, b"new").unwrap();
        assert!(fs::symlink_metadata(&l2).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&target).unwrap(), b"new");
        // A dangling symlink creates its target.
        let l3 = d.path().join("dangling");
        symlink("made.bin", &l3).unwrap();
        write_atomic(&l3, b"made").unwrap();
        assert!(fs::symlink_metadata(&l3).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(d.path().join("made.bin")).unwrap(), b"made");
        // A directory is refused with its name.
        let e = write_atomic(d.path(), b"x").unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn fifo_without_reader_is_an_error_not_a_hang_and_with_one_is_written() {
        use std::os::unix::fs::FileTypeExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pipe");
        let c = std::ffi::CString::new(f.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = write_atomic(&f, b"x").unwrap_err();
        assert!(e.to_string().contains("no reader"), "{e}");
        let reader = {
            let f = f.clone();
            std::thread::spawn(move || {
                // Opening with O_RDWR would not wait; a plain read open
                // blocks until the writer below opens, so retry the write.
                fs::read(&f).unwrap()
            })
        };
        let mut ok = false;
        for _ in 0..200 {
            if write_atomic(&f, b"through the pipe").is_ok() {
                ok = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(ok, "write to a FIFO with a reader");
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        assert!(fs::symlink_metadata(&f).unwrap().file_type().is_fifo());
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
