//! A child process that is a network service: free port, readiness wait, log capture, kill on
//! drop, and a watchdog so it cannot outlive the test process.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A running service child process.
#[derive(Debug)]
pub struct Service {
    name: &'static str,
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Service {
    /// Spawns `command` (which must listen on `port`), then waits until `ready` says yes.
    pub(crate) fn spawn(
        name: &'static str,
        mut command: Command,
        port: u16,
        log: PathBuf,
        ready: impl Fn(SocketAddr) -> bool,
        timeout: Duration,
    ) -> Result<Self> {
        let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = command
            .spawn()
            .with_context(|| format!("spawning {name}: {command:?}"))?;
        spawn_watchdog(child.id());
        let mut service = Self {
            name,
            child,
            port,
            log,
        };
        let addr = service.addr();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = service.child.try_wait()? {
                bail!(
                    "{name} exited with {status} before it was ready; its log:\n{}",
                    service.log_tail()
                );
            }
            if ready(addr) {
                return Ok(service);
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} was not ready on {addr} within {timeout:?}; its log:\n{}",
                    service.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines the service logged, for error messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Stops the service (SIGKILL: tests model crashes, and services here keep no state
    /// that a clean stop would save) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that was free a moment ago on 127.0.0.1. Services are started with a retry in case
/// another process takes it in between.
pub(crate) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding an ephemeral port")?;
    Ok(listener.local_addr()?.port())
}

/// True when something accepts TCP connections on `addr`.
pub(crate) fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Sends `request` and checks the reply starts with `expected` (e.g. Redis PING → +PONG).
pub(crate) fn answers(addr: SocketAddr, request: &[u8], expected: &[u8]) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(request).is_err() {
        return false;
    }
    let mut reply = vec![0u8; expected.len()];
    stream.read_exact(&mut reply).is_ok() && reply == expected
}

/// Kills `child` when this test process is gone, whatever way it died. A shell loop is the
/// portable way to do this without `unsafe` (no `prctl(PR_SET_PDEATHSIG)`).
fn spawn_watchdog(child: u32) {
    let parent = std::process::id();
    let script = format!(
        "while kill -0 {parent} 2>/dev/null && kill -0 {child} 2>/dev/null; do sleep 0.5; done; \
         kill -0 {parent} 2>/dev/null || kill -9 {child} 2>/dev/null"
    );
    let _ = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// Finds an executable: `$env_var`, then `PATH`, then `~/.cache/tierflow/bin`.
pub fn find_binary(name: &str, env_var: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        if is_executable(&path) {
            return Ok(path);
        }
        bail!("{env_var}={} is not an executable file", path.display());
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cache/tierflow/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
        .with_context(|| {
            format!(
                "`{name}` not found (looked at ${env_var}, PATH and ~/.cache/tierflow/bin). \
                 Run the tests with `bash tests/run.sh`, which installs it, or set {env_var}."
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
