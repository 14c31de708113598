//! The PostgreSQL server the store's tests run against, and one fresh
//! database per test.
//!
//! The server is `GEORGE_TEST_POSTGRES` when set (a URL or `key=value`
//! connection string of a database on a server where the user may
//! `CREATE DATABASE`). Otherwise a private one is started once per test
//! binary from Debian's `/usr/lib/postgresql/<version>/bin`: `initdb` into a
//! temporary directory, then `pg_ctl start`, listening on 127.0.0.1 on a free
//! port (and a unix socket in that directory), trust authentication, no
//! fsync, and TLS on with a certificate for `localhost`/`127.0.0.1` from a
//! test CA made with `openssl` ([`server_ca`]). As root (CI), both run as the
//! `postgres` system user, which owns the directory.
//!
//! A static is never dropped, so the server cannot be stopped by a guard.
//! Instead a watchdog shell, detached in a process group of its own (a
//! Ctrl-C does not reach it), polls the test process every second and once
//! it has exited, however it exited (even killed), stops the server
//! (`pg_ctl stop -m immediate`) and removes the directory.

use postgres::{Client, NoTls};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The environment variable naming an existing server.
const SERVER_ENV: &str = "GEORGE_TEST_POSTGRES";

/// Where Debian installs PostgreSQL, one directory per major version.
const DEBIAN_POSTGRESQL: &str = "/usr/lib/postgresql";

/// A database created for one test, dropped when the test ends.
pub struct TestDatabase {
    /// Connection URL of the database.
    pub url: String,
    name: String,
}

impl TestDatabase {
    /// Creates a database with a name no other test (or test process) uses.
    pub fn create() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("george_test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let admin = admin_url();
        on_own_thread(admin, |c| c.batch_execute(&format!("CREATE DATABASE {name}")))
            .unwrap_or_else(|e| panic!("cannot create the test database {name} on {admin}: {e}"));
        Self { url: with_dbname(admin, &name), name }
    }

    /// Runs `f` on a connection of its own to this database.
    pub fn with_client<T: Send>(&self, f: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send) -> T {
        on_own_thread(&self.url, f).unwrap_or_else(|e| panic!("on test database {}: {e}", self.name))
    }

    /// Closes every other connection to this database, as a server restart would.
    pub fn terminate_connections(&self) -> u64 {
        let name = self.name.clone();
        on_own_thread(admin_url(), move |c| {
            let rows = c.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&name],
            )?;
            Ok(rows.len() as u64)
        })
        .unwrap_or_else(|e| panic!("cannot terminate the connections to {}: {e}", self.name))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = on_own_thread(admin_url(), |c| c.batch_execute(&sql)) {
            eprintln!("cannot drop the test database {}: {e}", self.name);
        }
    }
}

/// Runs `f` on a new connection to `url`, on a thread of its own: the
/// synchronous client must not block an async worker thread.
fn on_own_thread<T: Send>(
    url: &str,
    f: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send,
) -> Result<T, postgres::Error> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut client = Client::connect(url, NoTls)?;
            f(&mut client)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The PEM file of the CA that signed the private server's certificate
/// (`None` for a server named by `GEORGE_TEST_POSTGRES`).
pub fn server_ca() -> Option<PathBuf> {
    let url = admin_url();
    PRIVATE_CA.get().filter(|_| !url.is_empty()).cloned()
}

static PRIVATE_CA: OnceLock<PathBuf> = OnceLock::new();

/// Makes a test CA and a server certificate for localhost in `dir`:
/// `ca.crt`, `server.crt`, `server.key`, and an unrelated `other-ca.crt`.
pub fn make_certificates(dir: &Path) {
    std::fs::create_dir_all(dir).expect("the certificate directory");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for ca in ["ca", "other-ca"] {
        run(
            Command::new("openssl").current_dir(dir).args(["req", "-x509"]).args(ec).args([
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
                "-days",
                "3",
                "-subj",
                &format!("/CN=george-test-{ca}"),
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]),
            "make a test CA with openssl",
        );
    }
    run(
        Command::new("openssl").current_dir(dir).arg("req").args(ec).args([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]),
        "make the server's key with openssl",
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("the extensions file");
    run(
        Command::new("openssl").current_dir(dir).args([
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "3",
            "-extfile",
            "server.ext",
        ]),
        "sign the server's certificate with openssl",
    );
}

/// The maintenance database of the server, started on first use.
fn admin_url() -> &'static str {
    static SERVER: OnceLock<String> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var(SERVER_ENV) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => start_private_server(),
    })
}

/// `url` with its database replaced by `dbname`.
fn with_dbname(url: &str, dbname: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return format!("{url} dbname={dbname}"); // key=value: the last one wins
    };
    let (location, query) = match rest.split_once('?') {
        Some((location, query)) => (location, format!("?{query}")),
        None => (rest, String::new()),
    };
    let authority = location.split_once('/').map_or(location, |(authority, _)| authority);
    format!("{scheme}://{authority}/{dbname}{query}")
}

fn start_private_server() -> String {
    let bin = server_binaries().unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server (initdb, pg_ctl) under {DEBIAN_POSTGRESQL}/*/bin: install Debian's postgresql \
             (.ci/run does), or set {SERVER_ENV} to the URL of a server where the tests may CREATE DATABASE"
        )
    });
    let as_root = running_as_root();
    let root = tempfile::Builder::new().prefix("george-pg-").tempdir().expect("a temporary directory").keep();
    if as_root {
        run(Command::new("chown").arg("postgres:").arg(&root), "chown the server directory to postgres");
    }
    let data = root.join("data");
    stop_when_this_process_exits(as_root, &bin.join("pg_ctl"), &data, &root);
    run(
        server_command(as_root, &bin.join("initdb")).arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]),
        "initdb",
    );
    let tls = root.join("tls");
    make_certificates(&tls);
    if as_root {
        run(Command::new("chown").arg("-R").arg("postgres:").arg(&tls), "chown the certificates to postgres");
    }
    let _ = PRIVATE_CA.set(tls.join("ca.crt"));
    let port = free_port();
    let options = format!(
        "-h 127.0.0.1 -p {port} -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
         -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
        root.display(),
        tls.join("server.crt").display(),
        tls.join("server.key").display()
    );
    let log = root.join("server.log");
    let started = server_command(as_root, &bin.join("pg_ctl"))
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t", "60", "-o", &options, "start"])
        .output()
        .expect("pg_ctl runs");
    assert!(
        started.status.success(),
        "pg_ctl start failed: {}\n{}",
        String::from_utf8_lossy(&started.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    format!("host=127.0.0.1 port={port} user=postgres dbname=postgres")
}

/// The newest `bin` directory with `initdb` and `pg_ctl`.
fn server_binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_POSTGRESQL)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `program`, run as the `postgres` user when we are root (initdb refuses root).
fn server_command(as_root: bool, program: &Path) -> Command {
    if as_root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("a bound address").port()
}

/// Starts the watchdog that stops the server and removes its directory
/// once this process has exited.
fn stop_when_this_process_exits(as_root: bool, pg_ctl: &Path, data: &Path, root: &Path) {
    let stop = if as_root { r#"runuser -u postgres -- "$2""# } else { r#""$2""# };
    // The watchdog runs in the background of a shell that exits at once, so
    // nothing is left for this process to wait for.
    let script = format!(
        r#"(while kill -0 "$1" 2>/dev/null; do sleep 1; done; {stop} -D "$3" -m immediate stop; rm -rf "$4") &"#
    );
    let started = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("george-test-postgres-watchdog")
        .arg(std::process::id().to_string())
        .arg(pg_ctl)
        .arg(data)
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .status()
        .expect("sh runs");
    assert!(started.success(), "the watchdog did not start: {started}");
}
