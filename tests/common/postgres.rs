//! A real Postgres server for a test: a fresh cluster in a temporary directory, on a
//! free port, started from the machine's installed server binaries (Debian keeps them
//! in /usr/lib/postgresql/<version>/bin) and stopped when dropped.
//!
//! initdb refuses to run as root, so as root the cluster belongs to the `postgres`
//! user and every server command runs through `runuser -u postgres`. Connections use
//! password authentication over TCP, as in production.
//!
//! [`Postgres::start_requiring_tls`] starts one as a managed database is set up: TLS on,
//! with a certificate for `localhost` (only) from a CA of its own
//! ([`Postgres::ca`]), and a `pg_hba.conf` that rejects every connection over TCP that
//! is not encrypted.
//!
//! Without server binaries a test is skipped with a message, except under `CI=true`,
//! where it fails: CI must run every test (`.ci/run` installs the server).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::free_port;

/// The cluster's superuser and its password.
const ADMIN: &str = "modhost_admin";
const PASSWORD: &str = "test-admin-password";

/// A running Postgres cluster.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Postgres {
    /// Starts a fresh cluster, or `None` (after saying why) when this machine has no
    /// Postgres server and this is not CI.
    pub fn start() -> Option<Postgres> {
        Postgres::start_with(false)
    }

    /// Starts a fresh cluster that takes connections over TLS only (see the module's
    /// doc), or `None` as [`Self::start`].
    pub fn start_requiring_tls() -> Option<Postgres> {
        Postgres::start_with(true)
    }

    /// The PEM file of the CA that signed the server's certificate (a cluster started
    /// with [`Self::start_requiring_tls`]).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn start_with(tls: bool) -> Option<Postgres> {
        let Some(bin) = server_binaries() else {
            let message = "no Postgres server binaries (initdb, pg_ctl) under \
                           /usr/lib/postgresql/*/bin: install the postgresql package";
            return super::missing("the Postgres half of this test", message);
        };
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("modhost-pg-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, PASSWORD).expect("write pwfile");
        if as_postgres {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()));
        }
        let postgres = Postgres {
            dir,
            bin,
            port: free_port(),
            as_postgres,
        };
        postgres.server_command("initdb", |c| {
            c.arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    ADMIN,
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                ])
                .arg(format!("--pwfile={}", pwfile.display()))
                .args(["-E", "UTF8", "--no-sync"]);
        });
        let mut options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            postgres.port,
            postgres.dir.path().display()
        );
        if tls {
            let (cert, key) = postgres.write_tls_files(&data);
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert.display(),
                key.display()
            ));
        }
        postgres.server_command("pg_ctl", |c| {
            c.arg("-D")
                .arg(&data)
                .args(["-o", &options, "-l"])
                .arg(postgres.dir.path().join("server.log"))
                .args(["-w", "start"]);
        });
        Some(postgres)
    }

    /// Creates database `name` and returns the administrator's URL for it.
    pub fn create_database(&self, name: &str) -> String {
        let mut createdb = Command::new(self.bin.join("createdb"));
        createdb
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                ADMIN,
                name,
            ])
            .env("PGPASSWORD", PASSWORD);
        run(&mut createdb);
        self.url(name)
    }

    /// The administrator's URL for database `name`.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://{ADMIN}:{PASSWORD}@127.0.0.1:{}/{name}",
            self.port
        )
    }

    /// Writes a CA ([`Self::ca`]), the server's certificate and key from it (returned),
    /// and a `pg_hba.conf` in `data` that refuses TCP connections in clear.
    fn write_tls_files(&self, data: &Path) -> (PathBuf, PathBuf) {
        let ca = super::tls::TestCa::new("modhost test Postgres CA");
        let server = ca.issue(&["localhost"]);
        let dir = self.dir.path();
        ca.write(&self.ca());
        let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::write(&cert, server.certificate.pem()).expect("write certificate");
        std::fs::write(&key, server.key.serialize_pem()).expect("write key");
        // Postgres refuses a key file others may read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostnossl all all 0.0.0.0/0 reject\n",
        )
        .expect("write pg_hba.conf");
        if self.as_postgres {
            run(Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&cert)
                .arg(&key)
                .arg(data.join("pg_hba.conf")));
        }
        (cert, key)
    }

    fn server_command(&self, program: &str, args: impl FnOnce(&mut Command)) {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        args(&mut command);
        run(&mut command);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let path = self.bin.join("pg_ctl");
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let _ = command
            .arg("-D")
            .arg(data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The newest installed server's binary directory.
fn server_binaries() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    found.sort_by_key(|bin| {
        bin.parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(command: &mut Command) {
    let output = command.output().expect("run a Postgres command");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
