//! The process runtime's sandbox: what keeps one agent, and every step it
//! runs, away from every other agent and from the engine's data.
//!
//! Two layers, both applied by the launcher (`launch.rs`: the agent's own
//! process, before it passes the gate and execs the agent, so the agent and
//! everything it starts inherit them, and nothing can undo them):
//!
//! - **Landlock** (Linux 5.13+, the same kernel mechanism OpenAI's Codex CLI
//!   uses for its Linux sandbox; no helper binary, no setuid, works for an
//!   unprivileged engine). Each attempt gets its own Landlock domain:
//!   - filesystem: the agent may read the system (everything outside the
//!     engine's data directory), read its secrets, read and remove its token
//!     file, and write only its own work, temporary, home and output
//!     directories. The data directory (the store, the logs, every other
//!     agent's directories) is refused.
//!   - processes: Landlock refuses `ptrace` (and so `/proc/PID/mem`,
//!     `/proc/PID/environ`, `/proc/PID/fd`) across domains, so no agent can
//!     read another agent's memory or environment, nor the engine's. On ABI 6
//!     (Linux 6.12+) signals and abstract unix sockets are scoped too: an
//!     agent cannot signal or connect to anything outside its own domain.
//! - **A per-attempt uid** when the engine runs as root: each attempt runs
//!   under its own unprivileged uid and gid (taken from a configurable
//!   range), with no supplementary groups and `no_new_privs`, so root's
//!   powers (`CAP_DAC_OVERRIDE`, `CAP_SYS_PTRACE`, mounts, …) never reach an
//!   agent, and file modes separate attempts even on a kernel without
//!   Landlock. When the attempt ends, every process left under its uid is
//!   killed, so nothing an agent started outlives it.
//!
//! Why not namespaces (bubblewrap's way)? A mount namespace could hide paths
//! instead of refusing them, but it needs root or unprivileged user
//! namespaces (often disabled), a mountpoint layout, and a helper to set it
//! up; Landlock gives the same refusals from one syscall for any user, and
//! the uid layer covers root.
//!
//! Without Landlock (an old kernel or one booted without it) the sandbox
//! degrades loudly: [`Isolation::warnings`] says what is missing, the engine
//! logs it at startup and `george status` / `george audit-security` show it.

use george_core::manifest::NetworkPolicy;
use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, Scope, ABI,
};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The Landlock ABI the sandbox asks for (features beyond it are not used).
const TARGET_ABI: ABI = ABI::V6;

/// How agents are isolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// On by default; turning it off is explicit and warned about.
    pub enabled: bool,
    /// The first uid (and gid) of the range per-attempt users are taken from
    /// when the engine runs as root.
    pub uid_base: u32,
    /// How many uids the range holds (at most this many live attempts).
    pub uid_count: u32,
    /// Paths no agent may read or write (the engine's data directory), apart
    /// from the attempt's own directories inside them.
    pub hidden: Vec<PathBuf>,
}

impl SandboxConfig {
    /// The default: on, uids from 2,000,000,000, hiding `data_dir`.
    pub fn hiding(data_dir: &Path) -> Self {
        Self { enabled: true, uid_base: 2_000_000_000, uid_count: 65_536, hidden: vec![absolute(data_dir)] }
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
}

/// What isolation agents actually get on this machine, as an operator should
/// see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isolation {
    /// The sandbox is on.
    pub enabled: bool,
    /// The kernel's Landlock ABI (0: none).
    pub landlock_abi: i32,
    /// Filesystem rules are enforced (Landlock).
    pub filesystem: bool,
    /// Other agents' memory and `/proc/PID/environ` are refused (Landlock's
    /// ptrace restriction, or a separate uid).
    pub process_memory: bool,
    /// Signals and abstract unix sockets are scoped to the agent (Landlock ABI 6).
    pub signals: bool,
    /// Each attempt runs under its own unprivileged uid (the engine is root).
    pub per_attempt_uid: bool,
    /// The uid range per-attempt users come from.
    pub uid_range: Option<(u32, u32)>,
    /// What is missing, in words.
    pub warnings: Vec<String>,
}

/// The running kernel's Landlock ABI version (0 when unavailable).
#[allow(unsafe_code)]
pub fn landlock_abi() -> i32 {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
    // only returns the ABI version (or -1 with errno); it touches no memory.
    let v = unsafe { nix::libc::syscall(nix::libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, 1u32) };
    i32::try_from(v).ok().filter(|v| *v > 0).unwrap_or(0)
}

impl Isolation {
    /// What `cfg` gives on this machine.
    pub fn probe(cfg: &SandboxConfig) -> Self {
        let abi = landlock_abi();
        let root = engine_is_root();
        let mut warnings = Vec::new();
        if !cfg.enabled {
            warnings.push(
                "the agent sandbox is OFF (agents.sandbox: false): every agent can read every other agent's files, \
                 token and memory"
                    .into(),
            );
            return Self {
                enabled: false,
                landlock_abi: abi,
                filesystem: false,
                process_memory: false,
                signals: false,
                per_attempt_uid: false,
                uid_range: None,
                warnings,
            };
        }
        if abi == 0 {
            warnings.push(if root {
                "Landlock is not available in this kernel: agents are separated by uid only (file modes, no \
                 filesystem allow-list)"
                    .into()
            } else {
                "Landlock is not available in this kernel and the engine is not root: agents are NOT isolated from \
                 each other (run on Linux 5.13+ with Landlock enabled, or run the engine as root for per-attempt uids)"
                    .into()
            });
        } else if abi < 6 {
            warnings.push(format!(
                "Landlock ABI {abi}: signals and abstract unix sockets are not scoped (needs ABI 6, Linux 6.12+)"
            ));
        }
        if !root {
            warnings.push(
                "the engine is not root: agents share its uid, so unix sockets reachable by path (e.g. a Docker \
                 socket the engine's user may use) are reachable by agents too"
                    .into(),
            );
        }
        if abi > 0 {
            warnings.extend(crowded_parents(&cfg.hidden));
        }
        Self {
            enabled: true,
            landlock_abi: abi,
            filesystem: abi > 0,
            process_memory: abi > 0 || root,
            signals: abi >= 6 || root,
            per_attempt_uid: root,
            uid_range: root.then_some((cfg.uid_base, cfg.uid_base.saturating_add(cfg.uid_count.saturating_sub(1)))),
            warnings,
        }
    }
}

/// One attempt's grants: paths, and what it may reach over TCP.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Grants {
    /// The AgentSpec's network policy.
    pub network: NetworkPolicy,
    /// The engine API's port (`engine-only` may connect to it).
    pub engine_port: Option<u16>,
    /// Read and write (work, tmp, home, output).
    pub write: Vec<PathBuf>,
    /// Read only (secrets, the agent's program).
    pub read: Vec<PathBuf>,
    /// Read and remove files (the token's directory).
    pub take: Vec<PathBuf>,
}

/// Errors preparing a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Landlock refused the ruleset.
    #[error("cannot build the agent's Landlock ruleset: {0}")]
    Landlock(String),
    /// No uid is free in the range.
    #[error("no free agent uid in {base}..{end}: raise agents.sandbox.uidCount")]
    NoUid {
        /// First uid.
        base: u32,
        /// One past the last.
        end: u32,
    },
    /// The network policy cannot be enforced here.
    #[error(
        "network: {0} cannot be enforced on this machine: the process runtime restricts TCP with Landlock ABI 4 \
         (Linux 6.7+) and the sandbox on; use network: full, or another runtime"
    )]
    Network(&'static str),
    /// A directory agents must reach cannot be traversed by them.
    #[error(
        "agents run under their own uid and cannot reach {path}: {blocker} has mode {mode:o} (it needs the \
         search bit for others: chmod o+x), or choose a data directory elsewhere"
    )]
    Unreachable {
        /// What the agent needs.
        path: PathBuf,
        /// The ancestor in the way.
        blocker: PathBuf,
        /// Its mode.
        mode: u32,
    },
}

/// The first ancestor of `path` (or `path` itself) that others cannot search.
pub fn unreachable_by_others(path: &Path) -> Option<(PathBuf, u32)> {
    let path = absolute(path);
    let mut at = PathBuf::from("/");
    for part in path.components().skip(1) {
        at.push(part);
        let Ok(meta) = std::fs::metadata(&at) else { return None };
        let mode = meta.permissions().mode();
        if meta.is_dir() && mode & 0o001 == 0 {
            return Some((at, mode & 0o7777));
        }
    }
    None
}

/// Checks that an agent under another uid can reach `path`.
pub fn check_reachable(path: &Path) -> Result<(), SandboxError> {
    match unreachable_by_others(path) {
        None => Ok(()),
        Some((blocker, mode)) => Err(SandboxError::Unreachable { path: path.to_path_buf(), blocker, mode }),
    }
}

/// Checks that `grants` can be enforced with the kernel's Landlock ABI
/// `abi` (as [`Isolation::probe`] found it), before anything is started.
pub fn check_enforceable(grants: &Grants, abi: i32) -> Result<(), SandboxError> {
    match grants.network {
        NetworkPolicy::EngineOnly if abi < 4 => Err(SandboxError::Network("engine-only")),
        NetworkPolicy::None if abi < 4 => Err(SandboxError::Network("none")),
        _ => Ok(()),
    }
}

fn landlock_err(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Landlock(e.to_string())
}

/// What every attempt's ruleset grants to read, opened: the system minus the
/// `hidden` paths, and the devices every program writes. It depends on the
/// hidden paths alone, so a warm launcher opens it before its binding.
pub(crate) struct Readable {
    hidden: Vec<PathBuf>,
    roots: Vec<PathFd>,
    devices: Vec<PathFd>,
}

impl Readable {
    /// Walks and opens what `hidden` leaves readable.
    pub(crate) fn open(hidden: &[PathBuf]) -> Self {
        // Gone meanwhile (a temporary file of someone else): nothing to grant.
        let roots = readable_roots(hidden).iter().filter_map(|p| PathFd::new(p).ok()).collect();
        let devices = ["/dev/null", "/dev/zero", "/dev/full", "/dev/tty"]
            .into_iter()
            .filter(|d| Path::new(d).exists())
            .filter_map(|d| PathFd::new(d).ok())
            .collect();
        Self { hidden: hidden.to_vec(), roots, devices }
    }

    /// Whether it was opened for these hidden paths.
    pub(crate) fn hides(&self, hidden: &[PathBuf]) -> bool {
        self.hidden == hidden
    }

    /// Closes what was opened (once a ruleset begun from it holds the
    /// paths, closing them is not left to the agent's start); a ruleset
    /// built from it afterwards opens them again.
    pub(crate) fn close(&mut self) {
        self.roots = Vec::new();
        self.devices = Vec::new();
    }

    fn is_open(&self) -> bool {
        !self.roots.is_empty()
    }
}

/// The attempt's Landlock ruleset: read the system minus the `hidden` paths,
/// plus the grants. Built by the launcher (see `launch`), in the agent's own
/// process.
pub(crate) fn ruleset(hidden: &[PathBuf], grants: &Grants) -> Result<RulesetCreated, SandboxError> {
    ruleset_with(&Readable::open(hidden), grants)
}

/// [`ruleset`], from what is readable opened already (again, if closed since).
pub(crate) fn ruleset_with(readable: &Readable, grants: &Grants) -> Result<RulesetCreated, SandboxError> {
    if !readable.is_open() {
        return ruleset(&readable.hidden, grants);
    }
    finish(readable.begin(grants.network)?, grants)
}

/// A ruleset begun before its attempt's grants are known (by a warm
/// launcher, while it waits): what every attempt may read, for agents with
/// one network policy. [`finish`] adds the grants.
pub(crate) struct Begun {
    network: NetworkPolicy,
    rs: RulesetCreated,
}

impl Begun {
    /// Whether it was begun for agents with the network policy `network`.
    pub(crate) fn serves(&self, network: NetworkPolicy) -> bool {
        self.network == network
    }
}

impl Readable {
    /// The ruleset of every attempt of agents with the network policy
    /// `network`, but their grants.
    pub(crate) fn begin(&self, network: NetworkPolicy) -> Result<Begun, SandboxError> {
        let read = AccessFs::from_read(TARGET_ABI);
        let mut ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(AccessFs::from_all(TARGET_ABI))
            .map_err(landlock_err)?
            .scope(Scope::Signal | Scope::AbstractUnixSocket)
            .map_err(landlock_err)?;
        if network != NetworkPolicy::Full {
            // Checked before (`check_enforceable`): this kernel has ABI 4, so the TCP rights are enforced.
            ruleset = ruleset.handle_access(AccessNet::from_all(ABI::V4)).map_err(landlock_err)?;
        }
        let mut rs = ruleset.create().map_err(landlock_err)?;
        for fd in &self.roots {
            rs = rs.add_rule(PathBeneath::new(fd, read)).map_err(landlock_err)?;
        }
        for fd in &self.devices {
            rs = rs.add_rule(PathBeneath::new(fd, AccessFs::from_file(TARGET_ABI))).map_err(landlock_err)?;
        }
        Ok(Begun { network, rs })
    }
}

/// The attempt's ruleset: `begun`, with the attempt's `grants` (for the
/// network policy it was begun for).
pub(crate) fn finish(begun: Begun, grants: &Grants) -> Result<RulesetCreated, SandboxError> {
    let read = AccessFs::from_read(TARGET_ABI);
    let all = AccessFs::from_all(TARGET_ABI);
    let mut rs = begun.rs;
    if let (NetworkPolicy::EngineOnly, Some(port)) = (grants.network, grants.engine_port) {
        rs = rs.add_rule(NetPort::new(port, AccessNet::ConnectTcp)).map_err(landlock_err)?;
    }
    let add = |rs: RulesetCreated, path: &Path, access| -> Result<RulesetCreated, SandboxError> {
        match PathFd::new(path) {
            Ok(fd) => rs.add_rule(PathBeneath::new(fd, access)).map_err(landlock_err),
            // Gone meanwhile (a temporary file of someone else): nothing to grant.
            Err(_) => Ok(rs),
        }
    };
    for p in &grants.read {
        rs = add(rs, p, read)?;
    }
    for p in &grants.take {
        rs = add(rs, p, read | AccessFs::RemoveFile)?;
    }
    for p in &grants.write {
        rs = add(rs, p, all)?;
    }
    Ok(rs)
}

/// More readable roots than this make each agent's start noticeably dearer
/// (each is opened and granted by every launcher: about 3.5 µs apiece on a
/// 2-vCPU VM, so 200 cost 0.7 ms of CPU per agent).
const CROWDED_ROOTS: usize = 200;

/// A warning when hiding `hidden` takes many rules: a hidden directory in a
/// crowded parent (a data directory under `/tmp`) is granted around entry by entry.
fn crowded_parents(hidden: &[PathBuf]) -> Option<String> {
    let n = readable_roots(hidden).len();
    (n > CROWDED_ROOTS).then(|| {
        let shown: Vec<String> = hidden.iter().map(|h| h.display().to_string()).collect();
        format!(
            "each agent's sandbox grants {n} paths one by one to hide {}: its parent directories hold many \
             entries, and every agent start opens them all; a data directory whose parents hold few (such as \
             /var/lib/george) starts agents faster",
            shown.join(", ")
        )
    })
}

/// Everything outside `hidden`, as the fewest paths: starting at `/`, a
/// directory with no hidden path inside is granted whole; one that holds a
/// hidden path is opened up entry by entry. A symbolic link is granted only
/// if where it leads is not hidden. (Entries created later inside such an
/// ancestor are not readable; the system directories are granted whole.)
fn readable_roots(hidden: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::from("/")];
    while let Some(dir) = todo.pop() {
        if hidden.iter().any(|h| dir.starts_with(h)) {
            continue;
        }
        if !hidden.iter().any(|h| h.starts_with(&dir)) {
            out.push(dir);
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_symlink()) {
                match std::fs::canonicalize(&path) {
                    Ok(target) if !hidden.iter().any(|h| target.starts_with(h) || h.starts_with(&target)) => {
                        out.push(path)
                    }
                    _ => {}
                }
                continue;
            }
            todo.push(path);
        }
    }
    out
}

/// Machine-wide claims on per-attempt uids, so that two engines on one
/// machine (each with its own data directory) never hand out the same uid:
/// one file per claimed uid, naming the attempt directory that holds it,
/// created under an exclusive lock on the directory.
#[derive(Debug, Clone)]
pub struct UidClaims {
    dir: PathBuf,
}

impl UidClaims {
    /// The machine's claims: `/run/george/uids` (or under the temporary
    /// directory where `/run` is not writable).
    pub fn machine() -> Self {
        let run = Path::new("/run");
        let dir = if run.is_dir() && nix::unistd::access(run, nix::unistd::AccessFlags::W_OK).is_ok() {
            run.join("george/uids")
        } else {
            std::env::temp_dir().join("george-uids")
        };
        Self { dir }
    }

    fn lock(&self) -> std::io::Result<nix::fcntl::Flock<std::fs::File>> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)?;
        let meta = std::fs::symlink_metadata(&self.dir)?;
        if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o022 != 0 {
            return Err(std::io::Error::other(format!(
                "{} must be a directory owned by the engine's user, writable by it alone",
                self.dir.display()
            )));
        }
        let f = std::fs::File::create(self.dir.join(".lock"))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e.into())
    }

    /// Claims the first free uid of `base..base + count`, starting at
    /// `base + start`, for the attempt directory `owner`. A claim whose
    /// attempt directory is gone and under whose uid nothing runs is stale
    /// (its engine died) and is taken over.
    pub fn claim(&self, base: u32, count: u32, start: u32, owner: &Path) -> std::io::Result<Option<u32>> {
        let _lock = self.lock()?;
        for i in 0..count {
            let uid = base + (start + i) % count.max(1);
            let file = self.dir.join(uid.to_string());
            if let Ok(held_by) = std::fs::read_to_string(&file) {
                if Path::new(held_by.trim()).exists() || !processes_of(uid).is_empty() {
                    continue;
                }
                let _ = std::fs::remove_file(&file);
            }
            let created = std::fs::OpenOptions::new().write(true).create_new(true).open(&file);
            if let Ok(mut f) = created {
                std::io::Write::write_all(&mut f, owner.as_os_str().as_encoded_bytes())?;
                return Ok(Some(uid));
            }
        }
        Ok(None)
    }

    /// Moves the claim of `uid` from the directory `from` to `to` (a warm
    /// agent's staged directory becoming its attempt's): whether `from` held it.
    pub fn reassign(&self, uid: u32, from: &Path, to: &Path) -> std::io::Result<bool> {
        let _lock = self.lock()?;
        let file = self.dir.join(uid.to_string());
        if !std::fs::read_to_string(&file).is_ok_and(|held_by| Path::new(held_by.trim()) == from) {
            return Ok(false);
        }
        std::fs::write(&file, to.as_os_str().as_encoded_bytes())?;
        Ok(true)
    }

    /// Gives `uid` back, if `owner` still holds it.
    pub fn release(&self, uid: u32, owner: &Path) {
        let Ok(_lock) = self.lock() else { return };
        let file = self.dir.join(uid.to_string());
        if std::fs::read_to_string(&file).is_ok_and(|held_by| Path::new(held_by.trim()) == owner) {
            let _ = std::fs::remove_file(&file);
        }
    }
}

/// Every process running under `uid`.
pub fn processes_of(uid: u32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            (e.metadata().ok()?.uid() == uid).then_some(pid)
        })
        .collect()
}

/// Kills every process running under `uid` (an ended attempt's leftovers)
/// and returns once none is left alive (zombies aside), or after two
/// seconds: a SIGKILL takes effect asynchronously, and an attempt whose
/// cleanup has returned must not still have a process running — its slot
/// is given to the next agent. True when none is left.
pub fn kill_all_of(uid: u32) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        // Alive: a start time to read (zombies and vanished pids have none).
        let pids: Vec<i32> =
            processes_of(uid).into_iter().filter(|pid| crate::procfs::start_time(*pid).is_some()).collect();
        if pids.is_empty() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            tracing::warn!(uid, left = pids.len(), "processes of an ended attempt did not die within 2s");
            return false;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Gives `path` and everything under it (never following links) to `uid`.
pub fn chown_tree(path: &Path, uid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid))?;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for e in std::fs::read_dir(path)? {
            chown_tree(&e?.path(), uid)?;
        }
    }
    Ok(())
}

/// Whether this process runs as root (and so drops every attempt to its own uid).
pub fn engine_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_roots_leave_out_the_hidden_directory_and_links_into_it() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let data = base.join("data");
        std::fs::create_dir_all(data.join("agents")).unwrap();
        std::fs::create_dir_all(base.join("repo")).unwrap();
        std::os::unix::fs::symlink(&data, base.join("link-in")).unwrap();
        std::os::unix::fs::symlink(base.join("repo"), base.join("link-out")).unwrap();
        let roots = readable_roots(std::slice::from_ref(&data));
        assert!(roots.contains(&base.join("repo")), "{roots:?}");
        assert!(roots.contains(&base.join("link-out")), "{roots:?}");
        assert!(!roots.iter().any(|r| r.starts_with(&data) || data.starts_with(r)), "{roots:?}");
        assert!(!roots.contains(&base.join("link-in")), "{roots:?}");
        assert!(roots.contains(&PathBuf::from("/usr")) || !Path::new("/usr").exists(), "{roots:?}");
    }

    #[test]
    fn a_data_directory_in_a_crowded_parent_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        for i in 0..=CROWDED_ROOTS {
            std::fs::create_dir(base.join(format!("neighbour-{i}"))).unwrap();
        }
        let warning = crowded_parents(&[base.join("data")]).expect("a warning");
        assert!(warning.contains(&base.join("data").display().to_string()), "{warning}");
        // At the top of the tree, only `/`'s entries are granted one by one.
        assert_eq!(crowded_parents(&[PathBuf::from("/george-data-that-is-not-there")]), None);
    }
}
