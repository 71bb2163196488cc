//! The MCP peers the tests drive: the node and Python SDK clients, the
//! Inspector CLI, the PyPI servers in the test virtualenv.

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use crate::*;

/// A running client driver (for tests that pause it).
pub struct Driver {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// Where the driver writes its transcript (in a temporary directory removed on drop).
    pub transcript_path: PathBuf,
    _dir: TempDir,
}

impl Driver {
    /// Starts tests/clients/stdio_session.mjs with `scenario`.
    pub fn node(scenario: &str, extra: &[&str]) -> Driver {
        Self::node_with_env(scenario, extra, &[])
    }

    /// Same, with extra environment variables for the driver.
    pub fn node_with_env(scenario: &str, extra: &[&str], env: &[(&str, &str)]) -> Driver {
        let dir = TempDir::new("drv");
        let transcript_path = dir.path().join("transcript.json");
        let mut child = Command::new("node")
            .current_dir(clients_dir())
            .arg("stdio_session.mjs")
            .arg(scenario)
            .arg(&transcript_path)
            .args(extra)
            // The PyPI reference servers live in the test virtualenv.
            .env("MCP_TEST_PYTHON", python())
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn node (is Node.js installed?)");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Driver {
            child,
            stdin,
            stdout,
            transcript_path,
            _dir: dir,
        }
    }

    /// Waits for the driver to print `line`.
    pub fn expect_line(&mut self, line: &str) {
        let mut s = String::new();
        let dog = Watchdog::new(self.child.id(), &format!("the client driver (waiting for {line:?})"));
        loop {
            s.clear();
            let n = self.stdout.read_line(&mut s).unwrap_or(0);
            if n == 0 {
                dog.check();
                panic!("driver ended before printing {line:?}");
            }
            if s.trim() == line {
                dog.check();
                return;
            }
        }
    }

    /// Sends a line to the driver's stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the driver to finish and returns its transcript.
    pub fn finish(mut self) -> Transcript {
        drop(self.stdin.take());
        let st = wait_bounded(&mut self.child, "the client driver");
        assert!(st.success(), "client driver failed: {st}");
        Transcript::load(&self.transcript_path)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // A failed test must not leave a paused client (and its server) behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the MCP Inspector CLI (npm `@modelcontextprotocol/inspector-cli`)
/// with `args` (a server command or URL, then `--method ...`); returns its
/// pid and what it printed. It keeps no transcript: tests assert the
/// exchange it is known to make (initialize, initialized, the method).
pub fn inspector_cli(args: &[&str]) -> (u32, String) {
    inspector_cli_with_env(args, &[])
}

/// [`inspector_cli`] with more environment (`NODE_EXTRA_CA_CERTS`).
pub fn inspector_cli_with_env(args: &[&str], env: &[(&str, &str)]) -> (u32, String) {
    let cli = clients_dir().join("node_modules/@modelcontextprotocol/inspector-cli/build/index.js");
    let child = Command::new("node")
        .arg(cli)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the MCP Inspector CLI (cargo xtask setup installs it)");
    let pid = child.id();
    let out = output_bounded(child, "the MCP Inspector CLI");
    assert!(out.status.success(), "inspector CLI {args:?} failed");
    (pid, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A console script of the Python test virtualenv (the PyPI servers).
pub fn venv_script(name: &str) -> PathBuf {
    python().parent().unwrap().join(name)
}

/// Runs `stdio_session.mjs` with `scenario` to completion and returns its transcript.
pub fn run_node(scenario: &str, extra: &[&str]) -> Transcript {
    Driver::node(scenario, extra).finish()
}

/// Runs the Python SDK client against a Python FastMCP server.
pub fn run_python_fastmcp() -> Transcript {
    let server = clients_dir().join("fastmcp_server.py");
    run_python_client("", &[python().as_os_str(), server.as_os_str()], &[])
}

/// Runs the Python SDK client (`py_session.py`) in `scenario` against the
/// stdio server `command`, with `env` for the client.
pub fn run_python_client(scenario: &str, command: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Transcript {
    let dir = TempDir::new("py");
    let path = dir.path().join("transcript.json");
    let st = status_bounded(
        Command::new(python())
            .arg(clients_dir().join("py_session.py"))
            .arg(&path)
            .args(command)
            .env("MCP_TEST_PY_SCENARIO", scenario)
            .envs(env.iter().copied())
            .stderr(Stdio::null()),
        "the Python SDK client",
    );
    assert!(st.success(), "python client ({scenario:?}) failed: {st}");
    Transcript::load(&path)
}

/// Runs a Python SDK session with the FastMCP server under a shell that
/// waits for a go: `prepare` gets the shell's pid first (to select it, or
/// move it into a cgroup), so the client and server are its children,
/// forked afterwards.
pub fn python_session_under_shell(prepare: impl FnOnce(u32)) -> Transcript {
    let dir = TempDir::new("sel");
    let transcript = dir.path().join("t.json");
    // `read` waits for the go; `; true` keeps sh from exec'ing python, so
    // the client is a child forked after the shell was selected.
    let script = format!(
        "read go; {py} {clients}/py_session.py {t} {py} {clients}/fastmcp_server.py 2>/dev/null; true",
        py = python().display(),
        clients = clients_dir().display(),
        t = transcript.display()
    );
    let mut sh = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    prepare(sh.id());
    writeln!(sh.stdin.as_mut().unwrap(), "go").unwrap();
    assert!(wait_bounded(&mut sh, "the Python session under a shell").success());
    Transcript::load(&transcript)
}

/// Bun, from npm `bun` (its executable links BoringSSL statically, without
/// symbols).
pub fn bun_exe() -> PathBuf {
    clients_dir().join("node_modules/bun/bin/bun.exe")
}

/// Claude Code, from npm `@anthropic-ai/claude-code` (a Bun executable).
pub fn claude_exe() -> PathBuf {
    clients_dir().join("node_modules/@anthropic-ai/claude-code/bin/claude.exe")
}

/// Claude Code in a temporary HOME with one HTTP MCP server added
/// (`claude mcp add --transport http NAME URL`); it works offline and
/// without an account for `mcp list`.
pub struct ClaudeHome {
    dir: TempDir,
    ca: PathBuf,
}

impl ClaudeHome {
    /// Adds `url` as server `name`, trusting the certificate `ca`.
    pub fn new(name: &str, url: &str, ca: &std::path::Path) -> Self {
        let home = ClaudeHome {
            dir: TempDir::new("claude-home"),
            ca: ca.to_owned(),
        };
        let out = home.run(&["mcp", "add", "--transport", "http", name, url]);
        assert!(out.contains(name), "claude mcp add: {out}");
        home
    }

    /// Runs `claude ARGS` in this HOME; its standard output.
    pub fn run(&self, args: &[&str]) -> String {
        let out = command_output_bounded(
            Command::new(claude_exe())
                .args(args)
                .current_dir(self.dir.path())
                .env("HOME", self.dir.path())
                .env("NODE_EXTRA_CA_CERTS", &self.ca)
                .env("DISABLE_AUTOUPDATER", "1")
                .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
                .stdin(Stdio::null()),
            "claude (npm @anthropic-ai/claude-code)",
        );
        assert!(out.status.success(), "claude {args:?}: {:?}", out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
