//! Harness for the integration tests: start the real monitor (root), drive
//! real MCP servers with the official SDK clients, and compare what the
//! monitor reported with what the clients actually sent and received.
//!
//! Environment (set by `cargo xtask test`):
//! - `MCP_MONITOR_BIN`: the mcp-monitor binary (default target/release).
//! - `MCP_TEST_CLIENTS`: tests/clients, with node_modules installed.
//! - `MCP_TEST_PYTHON`: python of the virtualenv with `mcp` and `fastmcp`.
//! - `MCP_TEST_IMAGE`: the container image under test (Podman's store).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

mod bounded;
mod container;
mod go_peers;
mod http;
mod leak;
mod monitor;
mod peers;
mod servers;
mod transcript;

pub use bounded::{command_output_bounded, output_bounded, peer_limit, status_bounded, wait_bounded, Watchdog};
pub use container::{podman_ulimit_args, test_image, PodSpec};
pub use go_peers::{go_peers, go_peers_with_symbols, go_record, go_server, GoClient, GoPeers};
pub use http::{
    bun_server, everything_http, expected, fastmcp_h2_server, fastmcp_http, fastmcp_server, fastmcp_server_untouched,
    fastmcp_server_variant, rows, session, session_calling, session_h2, session_rows, session_with, transport_summary,
    ts_https_seen_from_both_ends, ts_session, ts_session_under, view, Rows, TOOL_ROWS,
};
pub use leak::{has_all_rules, leak_session, wait_until, LEAK_RULES};
pub use monitor::{metric_value, Monitor};
pub use peers::{
    bun_exe, claude_exe, inspector_cli, inspector_cli_with_env, python_session_under_shell, run_node,
    run_python_client, run_python_fastmcp, venv_script, ClaudeHome, Driver,
};
pub use servers::{self_signed, wait_listening, wait_port, Certificate, Server};
pub use transcript::{assert_same, count, observed, observed_rows, Row, Sent, Transcript};

/// Root of the workspace (the parent directory of the `tests` crate).
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The monitor binary under test.
pub fn monitor_bin() -> PathBuf {
    std::env::var_os("MCP_MONITOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/release/mcp-monitor"))
}

/// tests/clients (with node_modules).
pub fn clients_dir() -> PathBuf {
    std::env::var_os("MCP_TEST_CLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("tests/clients"))
}

/// Python with the MCP SDK installed.
pub fn python() -> PathBuf {
    std::env::var_os("MCP_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv/bin/python"))
}

/// How much slower than native this machine runs the tests: 1 natively;
/// the kernel matrix sets `MCP_TEST_TIME_SCALE` in its emulated guests.
/// Every wait of the harness is multiplied by it.
pub fn time_scale() -> u32 {
    std::env::var("MCP_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1)
}

/// `d` scaled by [`time_scale`].
pub fn scaled(d: Duration) -> Duration {
    d * time_scale()
}

/// Fails the test early, with the fix, when not root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "integration tests load eBPF programs and must run as root: `sudo cargo xtask test`"
    );
    assert!(
        monitor_bin().exists(),
        "{} is missing: run `cargo xtask build`",
        monitor_bin().display()
    );
    assert!(
        clients_dir().join("node_modules/@modelcontextprotocol/sdk").exists(),
        "test clients are not installed: run `cargo xtask setup`"
    );
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh `mcpmon-<tag>-<pid>-<n>` directory under the system temp directory.
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "mcpmon-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `openssl ARGS` in `dir` (certificates for TLS tests; `cargo xtask
/// setup` installs openssl) and fails the test if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let st = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl (cargo xtask setup installs it)");
    assert!(st.success(), "openssl {args:?}");
}

/// A TCP port free on 127.0.0.1 right now, never one this test process
/// was given before (a port picked for a receiver that is not started yet
/// must not become a monitor's metrics port).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let p = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if !given.contains(&p) {
            given.push(p);
            return p;
        }
    }
}

/// Minimal HTTP GET; returns (status line, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Ok((head.lines().next().unwrap_or("").to_owned(), body.to_owned()))
}

/// Minimal HTTP POST of a JSON body; returns (status line, body).
pub fn http_post(addr: SocketAddr, path: &str, body: &str) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Ok((head.lines().next().unwrap_or("").to_owned(), body.to_owned()))
}

/// Fake credentials in real formats, random per run (never real secrets).
pub mod fake {
    fn rng() -> impl FnMut() -> u64 {
        let mut s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        }
    }

    fn pick(next: &mut impl FnMut() -> u64, alphabet: &[u8], n: usize) -> String {
        (0..n)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize] as char)
            .collect()
    }

    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A GitHub classic PAT with a valid checksum.
    pub fn github_token() -> String {
        let mut r = rng();
        let body = pick(&mut r, BASE62, 30);
        let mut v = crc32(body.as_bytes());
        let mut sum = [b'0'; 6];
        for i in (0..6).rev() {
            sum[i] = BASE62[(v % 62) as usize];
            v /= 62;
        }
        format!("ghp_{body}{}", std::str::from_utf8(&sum).unwrap())
    }

    /// An AWS access key id and secret access key (with both cases and a
    /// digit, as the detector expects of a secret key beside an id).
    pub fn aws_keys() -> (String, String) {
        let mut r = rng();
        r();
        let id = format!("AKIA{}", pick(&mut r, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16));
        let secret = format!(
            "{}{}{}{}",
            pick(&mut r, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 1),
            pick(&mut r, b"abcdefghijklmnopqrstuvwxyz", 1),
            pick(&mut r, b"0123456789", 1),
            pick(
                &mut r,
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+",
                37,
            )
        );
        (id, secret)
    }

    /// Planted keys, as a `.env` file in `dir` holds them: the file's path
    /// and `[github token, aws key id, aws secret]`.
    pub fn env_file(dir: &std::path::Path) -> (std::path::PathBuf, [String; 3]) {
        let gh = github_token();
        let (aws_id, aws_secret) = aws_keys();
        let file = dir.join("secrets.env");
        std::fs::write(
            &file,
            format!("GITHUB_TOKEN={gh}\nAWS_ACCESS_KEY_ID={aws_id}\nAWS_SECRET_ACCESS_KEY={aws_secret}\n"),
        )
        .unwrap();
        (file, [gh, aws_id, aws_secret])
    }
}

/// The cgroup v2 hierarchy (`/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup_root() -> PathBuf {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists())
        .expect("a cgroup v2 hierarchy")
}

/// 64 hex digits, different per seed.
pub fn container_id(seed: u64) -> String {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    (0..4)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{x:016x}")
        })
        .collect()
}

/// Removes test cgroups `base/<path>` and their parents up to and including
/// `base`, deepest first, once their processes have exited.
pub fn remove_cgroups<'a>(base: &Path, paths: impl IntoIterator<Item = &'a str>) {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for path in paths {
        let mut p = base.join(path);
        while p != base {
            dirs.push(p.clone());
            p = p.parent().unwrap().to_owned();
        }
    }
    dirs.push(base.to_owned());
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.dedup();
    for d in dirs {
        for _ in 0..50 {
            if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
