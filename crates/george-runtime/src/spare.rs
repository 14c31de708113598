//! Spare job directories: an ended attempt's directories, emptied and cleaned
//! of whatever its agent could leave on them, kept for a later attempt instead
//! of deleted and made again.
//!
//! Why: every directory or file made costs an inode, and on a file system
//! without a journal (ext4 made without one, as this project's benchmark VM
//! is) each inode freed in the last one to six minutes is skipped, one buffer
//! lookup each, by every allocation in its group after it. An engine that
//! made and deleted eight inodes a job spent a growing share of the machine
//! there (27% of all CPU samples of a busy bench, December 2026). A spare is
//! one rename out of the attempt's place and one rename into the next one's.
//!
//! Nothing of one job may reach the next: only directories whose agent ran
//! under a uid of its own are kept, once no process of that uid is left (none
//! can hold them open or write into them afterwards). What an owner can leave
//! on a directory besides its entries is removed (its `user.*` and ACL
//! extended attributes), or makes the directory refused (an inode flag a fresh
//! directory beside it would not have, such as an encryption policy or
//! case-folding, which cannot be undone; a directory grown past 64 KiB), and a
//! refused one is deleted as before. A spare is the engine's (`0o700`) until
//! it is given to the next attempt's uid.

use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// At most this many spares are kept (each a handful of empty directories).
const MAX_SPARES: usize = 64;

/// A directory whose entries once took more than this is not kept (a
/// directory never shrinks).
const MAX_DIR_BYTES: u64 = 64 * 1024;

/// Inode flags any fresh directory may carry, or gain by growing: extents,
/// a hashed index, inline data (`FS_EXTENT_FL`, `FS_INDEX_FL`, `FS_INLINE_DATA_FL`).
const BENIGN_FLAGS: u32 = 0x0008_0000 | 0x0000_1000 | 0x1000_0000;

/// The spare job directories of one process runtime, kept in `dir`: each a
/// job directory whose only entry is an attempt directory named `first`,
/// holding the agent's (emptied) `agent_owned` directories and a `pid_tmp`.
#[derive(Debug)]
pub(crate) struct Spares {
    dir: PathBuf,
    first: String,
    agent_owned: &'static [&'static str],
    pid_tmp: &'static str,
    /// The spares this engine kept and has not handed out (the one owner of `dir`'s entries).
    kept: Mutex<Vec<PathBuf>>,
    serial: AtomicU64,
}

impl Spares {
    /// Spares kept in `dir`, each holding its attempt directory as `first`.
    pub(crate) fn new(dir: PathBuf, first: u32, agent_owned: &'static [&'static str], pid_tmp: &'static str) -> Self {
        let (kept, serial) = (Mutex::new(Vec::new()), AtomicU64::new(0));
        Self { dir, first: first.to_string(), agent_owned, pid_tmp, kept, serial }
    }

    /// A spare job directory to rename into place, its attempt directory
    /// (`first`) inside holding the agent's empty directories; `None` when
    /// there is none.
    pub(crate) fn take(&self) -> Option<PathBuf> {
        self.kept.lock().pop()
    }

    /// Keeps `job_dir` as a spare: its only entry `attempt_dir`, whose
    /// agent-owned subdirectories are emptied and cleaned, and whose `pid`
    /// record becomes the `pid_tmp` one (to be written over). False when it
    /// was not kept; then `attempt_dir` is gone (and `job_dir` too when
    /// empty). Call it only once no process of the attempt's agent is left.
    pub(crate) fn keep(&self, job_dir: &Path, attempt_dir: &Path) -> bool {
        if self.kept.lock().len() >= MAX_SPARES {
            return self.refuse(job_dir, attempt_dir);
        }
        match self.clean(job_dir, attempt_dir) {
            Ok(true) => true,
            Ok(false) => self.refuse(job_dir, attempt_dir),
            Err(e) => {
                tracing::debug!(dir = %attempt_dir.display(), error = %e, "attempt directory not kept as a spare");
                self.refuse(job_dir, attempt_dir)
            }
        }
    }

    fn refuse(&self, job_dir: &Path, attempt_dir: &Path) -> bool {
        // Where it is: in its place, or renamed as the first attempt's (`clean`).
        let at = if std::fs::symlink_metadata(attempt_dir).is_ok() { attempt_dir } else { &job_dir.join(&self.first) };
        let _ = std::fs::remove_dir_all(at);
        let _ = std::fs::remove_dir(job_dir); // only if empty
        false
    }

    fn clean(&self, job_dir: &Path, attempt_dir: &Path) -> std::io::Result<bool> {
        let pid_tmp = self.pid_tmp;
        // The job's only attempt directory, a real one (the engine's).
        let only = std::fs::read_dir(job_dir)?.count() == 1;
        if !only || !is_real_dir(attempt_dir)? {
            return Ok(false);
        }
        let reference = flags(attempt_dir)?;
        for entry in std::fs::read_dir(attempt_dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            if self.agent_owned.contains(&name.as_ref()) {
                if !clean_agent_dir(&path, reference)? {
                    return Ok(false);
                }
            } else if name != "pid" && name != pid_tmp {
                remove(&path)?;
            }
        }
        let attempt_dir = if attempt_dir.file_name() == Some(self.first.as_ref()) {
            attempt_dir.to_path_buf()
        } else {
            let first = job_dir.join(&self.first);
            std::fs::rename(attempt_dir, &first)?;
            first
        };
        if !is_real_dir(&attempt_dir)? {
            return Ok(false);
        }
        std::fs::create_dir_all(&self.dir)?;
        let spare = self.dir.join(format!("{}-{}", std::process::id(), self.serial.fetch_add(1, Ordering::Relaxed)));
        // Its pid record goes with it, so that an engine killed before this
        // rename finds the attempt (and cleans it up) again.
        std::fs::rename(job_dir, &spare)?;
        let attempt_dir = spare.join(&self.first);
        match std::fs::rename(attempt_dir.join("pid"), attempt_dir.join(pid_tmp)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_dir_all(&spare);
                return Err(e);
            }
            _ => {}
        }
        self.kept.lock().push(spare);
        Ok(true)
    }

    /// Removes the spares this engine does not hold (an earlier engine's).
    pub(crate) fn clear_others(&self) {
        // Held throughout: no spare is kept or taken meanwhile.
        let kept = self.kept.lock();
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if !kept.contains(&entry.path()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// A directory, not a link to one.
fn is_real_dir(path: &Path) -> std::io::Result<bool> {
    Ok(std::fs::symlink_metadata(path)?.file_type().is_dir())
}

fn remove(path: &Path) -> std::io::Result<()> {
    if is_real_dir(path)? {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// The inode flags of `path` (none where the file system has none).
fn flags(path: &Path) -> std::io::Result<u32> {
    let dir = std::fs::File::open(path)?;
    match rustix::fs::ioctl_getflags(&dir) {
        Ok(f) => Ok(f.bits()),
        Err(rustix::io::Errno::NOTTY | rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::INVAL) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Empties a directory an agent owned and removes what its owner could set
/// on it; gives it back to the engine (`0o700`). False when it cannot be
/// made like a fresh one (`reference`: the flags of one beside it).
fn clean_agent_dir(path: &Path, reference: u32) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.file_type().is_dir() || meta.len() > MAX_DIR_BYTES {
        return Ok(false);
    }
    for entry in std::fs::read_dir(path)? {
        remove(&entry?.path())?;
    }
    strip_xattrs(path)?;
    if flags(path)? & !(reference | BENIGN_FLAGS) != 0 {
        return Ok(false);
    }
    let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    Ok(true)
}

/// Removes the extended attributes an owner can set: `user.*` and POSIX ACLs.
fn strip_xattrs(path: &Path) -> std::io::Result<()> {
    let size = match rustix::fs::llistxattr_query(path) {
        Ok(0) => return Ok(()),
        Ok(n) => n,
        Err(rustix::io::Errno::OPNOTSUPP) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut names = vec![0u8; size];
    let n = rustix::fs::llistxattr(path, &mut names[..])?;
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"user.") || name.starts_with(b"system.posix_acl_") {
            rustix::fs::lremovexattr(path, <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name))?;
        }
    }
    Ok(())
}
