//! What the memory, soak and overload benches share: the release `twinlink` binary run as a child process,
//! so that its resident memory (read from `/proc/<pid>/status`) is the broker's alone, not the
//! load generator's; and the small helpers both need.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// twinlink as a child process, killed when dropped.
pub struct Twinlink {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl Drop for Twinlink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Twinlink {
    /// Starts the binary on a free loopback port (on PostgreSQL when `database_url` is given,
    /// else on the embedded store in `data_dir`), with `extra` flags, on the CPUs of the
    /// `taskset -c` list `cpus` when given (taskset execs the binary: the pid stays the
    /// broker's), and waits until it answers /ready.
    pub async fn start(
        database_url: Option<&str>,
        data_dir: &Path,
        workers: usize,
        extra: &[&str],
        cpus: Option<&str>,
    ) -> Twinlink {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // BENCH_TWINLINK_BIN runs another build of twinlink (an older commit's, to alternate
        // the two in one session) with the bench of this one.
        let binary = std::env::var_os("BENCH_TWINLINK_BIN")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_twinlink").into());
        let mut command = placed(&binary, cpus);
        if let Some(url) = database_url {
            command.args(["--database-url", url]);
        }
        let child = command
            .args(["serve", "--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--workers", &workers.to_string()])
            .args(["--log", &log_level()])
            .args(extra)
            .env_remove("TWINLINK_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the twinlink binary starts");
        let mut t = Twinlink {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = t.child.try_wait().expect("child status") {
                panic!("twinlink exited before answering: {status}");
            }
            let ready = client.get(format!("{}/ready", t.base)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return t;
            }
            assert!(Instant::now() < deadline, "twinlink not ready within 120 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The CPU time the broker has used so far (all its threads, user and system), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id())
    }

    /// The process id of the broker.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of `/proc/<pid>/status` given in kB (VmRSS: resident now; VmHWM: peak resident;
    /// RssAnon, RssFile, RssShmem: the parts of VmRSS), in MiB.
    pub fn memory_mib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/<pid>/status");
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/<pid>/status"));
        kb / 1024.0
    }

    /// Panics if the broker has exited.
    pub fn check_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("child status") {
            panic!("twinlink exited: {status}");
        }
    }
}

/// A command running `program`, on the CPUs of the `taskset -c` list `cpus` when given (taskset
/// execs the program: the child's pid is the program's).
pub fn placed(program: &Path, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// The CPU time process `pid` has used (user and system, all threads), in seconds, from
/// `/proc/<pid>/stat` (fields 14 and 15, in clock ticks of `getconf CLK_TCK`).
pub fn cpu_seconds(pid: u32) -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // The command name (field 2) may hold spaces; the fields after it start past its ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat") + 2..]
        .split_whitespace()
        .collect();
    let tick = |i: usize| fields[i].parse::<f64>().expect("a tick count");
    // Field 14 (utime) is the 12th after the name's, field 15 (stime) the 13th.
    (tick(11) + tick(12)) / ticks
}

/// twinlink's log level: `error`, or BENCH_TWINLINK_LOG (e.g. `warn`, to keep the reasons of
/// failures a long run meets on its standard error).
fn log_level() -> String {
    std::env::var("BENCH_TWINLINK_LOG").unwrap_or_else(|_| "error".into())
}

/// SplitMix64: small, deterministic, good enough to spread test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// A point in a box of about 22 km x 11 km (a city), rounded to 1e-6 degrees.
    pub fn point(&mut self) -> (f64, f64) {
        let round = |x: f64| (x * 1e6).round() / 1e6;
        (
            round(2.2 + 0.3 * self.unit()),
            round(48.8 + 0.1 * self.unit()),
        )
    }
}

/// The value at quantile `p` of sorted microseconds, in milliseconds (NaN when empty).
pub fn quantile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

/// The 1-, 5- and 15-minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The total size of the files under `dir`, in bytes.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The size of the database at `url` (`pg_database_size`), in bytes.
pub async fn database_bytes(url: &str) -> u64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("the bench database");
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await
        .expect("pg_database_size");
    row.get::<_, i64>(0) as u64
}

/// Where a bench's temporary data directory goes: `var` when set, else /dev/shm when it exists
/// and has `want_bytes` free, else TMPDIR. The embedded store fsyncs every commit: on a virtual
/// disk that bounds loading far below what the store takes in memory.
pub fn data_parent(var: &str, want_bytes: u64) -> std::path::PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return p.into();
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && free_bytes(shm).is_some_and(|f| f >= want_bytes) {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

/// Free bytes of the file system holding `path`, from `df` (no libc dependency).
fn free_bytes(path: &Path) -> Option<u64> {
    let out = Command::new("df").args(["-Pk"]).arg(path).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let kb: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}
