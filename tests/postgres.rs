//! A private PostgreSQL server for the tests and the benchmark: `initdb` into
//! a temporary folder, `pg_ctl start` on a free loopback port, as the
//! `postgres` user through `runuser` when running as root (`initdb` refuses
//! root). It is stopped when dropped, and by a watcher process if this
//! process dies first, so no server outlives its tests.
//!
//! Connections over TCP need the password [`PASSWORD`] (scram-sha-256), so a
//! wrong password is refused as it would be in production. When PostgreSQL
//! is missing the harness panics with the command that installs it; it
//! never skips.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The password of the `postgres` user over TCP.
pub const PASSWORD: &str = "wasm-sup-test";

/// A running private server (see the module doc).
pub struct Postgres {
    dir: tempfile::TempDir,
    /// Its loopback port.
    pub port: u16,
    bin: PathBuf,
    as_postgres: bool,
    watcher: Child,
}

/// The newest PostgreSQL 15+ server binaries installed.
fn bin_dir() -> PathBuf {
    let fix = "PostgreSQL 15 or later is not installed: run `apt-get install -y postgresql-15` (scripts/test.sh installs it)";
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap_or_else(|_| panic!("{fix}"))
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (v >= 15 && bin.join("pg_ctl").exists()).then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| panic!("{fix}")).1
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn id_of(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .expect("run id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!("no `postgres` user: run `apt-get install -y postgresql-15` (it creates it)")
        })
}

impl Postgres {
    /// Starts a server of its own (a test that restarts or stops it).
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("wasm-sup-pg-")
            .tempdir()
            .expect("temp dir");
        if as_postgres {
            std::os::unix::fs::chown(dir.path(), Some(id_of("-u")), Some(id_of("-g")))
                .expect("chown the server's folder to postgres");
        }
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).expect("write the password file");
        if as_postgres {
            std::os::unix::fs::chown(&pwfile, Some(id_of("-u")), None).expect("chown");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let pg = Postgres {
            watcher: watch(dir.path(), &bin, as_postgres),
            dir,
            port,
            bin,
            as_postgres,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-N",
                "-E",
                "UTF8",
                "--locale=C",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
            ],
        );
        pg.start_server();
        pg
    }

    /// The server every test of this process shares (each in a database
    /// of its own, see [`Postgres::database`]).
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(Postgres::start)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// One of the server's programs (run as `postgres` when root).
    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        }
    }

    /// Runs one of the server's programs; a failure panics with its output
    /// and the server's log.
    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}: install postgresql-15"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    fn start_server(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=400",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "-o",
                &opts,
                "start",
            ],
        );
    }

    /// Stops the server at once (as a crash would: `-m immediate`).
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    /// Starts it again after [`Postgres::stop`].
    pub fn restart(&self) {
        self.start_server();
    }

    /// The URL of database `db`, with the password.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// A new, empty database; returns its URL.
    pub async fn database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.execute("postgres", &format!("CREATE DATABASE {name}"))
            .await;
        self.url(&name)
    }

    /// Runs SQL in database `db`.
    pub async fn execute(&self, db: &str, sql: &str) {
        let client = self.connect(&self.url(db)).await;
        client.batch_execute(sql).await.expect(sql);
    }

    /// A client of the database at `url`.
    pub async fn connect(&self, url: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        tokio::spawn(conn);
        client
    }
}

/// A process that stops the server and removes its folder once this
/// process is gone, however it ended.
fn watch(dir: &Path, bin: &Path, as_postgres: bool) -> Child {
    let stop = format!(
        "{}{} -D {}/data -m immediate -w stop",
        if as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        },
        bin.join("pg_ctl").display(),
        dir.display()
    );
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        dir = dir.display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server's watcher")
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.watcher.kill();
        let _ = self.watcher.wait();
    }
}
