//! A PostgreSQL server of the test's own: `initdb` in a temp dir, then
//! `postgres -p PORT -k DIR` on a free port, run as the `postgres` user (the
//! tests run as root, which PostgreSQL refuses). Stopped and started again
//! at will, keeping its data; shut down when dropped.

#![allow(dead_code)]

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct OwnPostgres {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnPostgres {
    /// Initialise a cluster (trust auth, no fsync) and start it.
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL under /usr/lib/postgresql")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|p| p.join("postgres").exists())
            .expect("a postgres binary");
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(status.success(), "chown the temp dir to postgres");
        let mut pg = Self {
            port: free_port(),
            bin,
            dir,
            child: None,
        };
        let status = pg
            .as_postgres("initdb")
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(pg.data())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("initdb");
        assert!(status.success(), "initdb failed");
        pg.spawn();
        pg
    }

    /// `postgres://` URL of the server's `postgres` database over TCP.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Start the server (again) and wait until it accepts connections.
    pub fn spawn(&mut self) {
        let child = self
            .as_postgres("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-h", "127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ready() {
            assert!(Instant::now() < deadline, "postgres did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fast shutdown (SIGINT to the postmaster: open sessions are ended, no
    /// new connections), waiting until it is gone.
    pub fn stop(&mut self) {
        self.pg_ctl_stop("fast");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "postgres still listens");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ready(&self) -> bool {
        self.as_postgres("pg_isready")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
            .status()
            .is_ok_and(|s| s.success())
    }

    fn pg_ctl_stop(&mut self, mode: &str) {
        if let Some(mut child) = self.child.take() {
            let _ = self
                .as_postgres("pg_ctl")
                .args(["stop", "-w", "-m", mode, "-D"])
                .arg(self.data())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.wait();
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn as_postgres(&self, program: &str) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"])
            .arg(self.bin.join(program));
        cmd
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.pg_ctl_stop("immediate");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}
