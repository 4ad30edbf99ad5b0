//! The two services tierflow needs: redis-server and a Kafka-protocol broker (tansu 0.6).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use tempfile::TempDir;

use crate::process::{Service, accepts, answers, find_binary, free_port};
use crate::proxy::TlsProxy;

const START_ATTEMPTS: usize = 5;
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A private redis-server on a free loopback port; nothing is persisted unless started with
/// [`RedisServer::start_persistent`].
#[derive(Debug)]
pub struct RedisServer {
    /// `None` while stopped ([`RedisServer::stop`]).
    service: Option<Service>,
    binary: PathBuf,
    port: u16,
    /// Arguments after the common ones (password, TLS files, persistence).
    extra: Vec<String>,
    /// Speaks only TLS (on `port`).
    speaks_tls: bool,
    persistent: bool,
    password: Option<String>,
    /// CA file and the directory holding the certificates, for TLS servers.
    tls: Option<(PathBuf, TempDir)>,
    dir: TempDir,
}

impl RedisServer {
    pub fn start() -> Result<Self> {
        Self::start_with_args(&[])
    }

    /// A server that requires `password` (AUTH); its `url()` carries the password.
    pub fn start_with_password(password: &str) -> Result<Self> {
        let mut server = Self::start_with_args(&["--requirepass", password])?;
        server.password = Some(password.to_owned());
        Ok(server)
    }

    /// A server that writes every acknowledged write to its append-only file before
    /// answering (`appendfsync always`), so that [`RedisServer::stop`] (a crash) and
    /// [`RedisServer::restart`] keep everything it acknowledged — and nothing it did not.
    pub fn start_persistent() -> Result<Self> {
        Self::start_configured(&[], false, true)
    }

    /// A server that speaks only TLS, with a certificate for 127.0.0.1 signed by a fresh CA;
    /// `url()` is `rediss://...`, and `tls_ca_file()` is the CA to trust (PEM).
    pub fn start_tls() -> Result<Self> {
        let dir = tempfile::tempdir().context("creating TLS dir")?;
        let files = crate::tls::write_server_certificates(dir.path())?;
        let cert = files.cert.display().to_string();
        let key = files.key.display().to_string();
        let ca = files.ca.display().to_string();
        let mut server = Self::start_configured(
            &[
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                "no",
            ],
            true,
            false,
        )?;
        server.tls = Some((files.ca, dir));
        Ok(server)
    }

    /// The CA certificate (PEM) that signed a TLS server's certificate.
    pub fn tls_ca_file(&self) -> Option<&std::path::Path> {
        self.tls.as_ref().map(|(ca, _)| ca.as_path())
    }

    fn start_with_args(extra: &[&str]) -> Result<Self> {
        Self::start_configured(extra, false, false)
    }

    fn start_configured(extra: &[&str], tls: bool, persistent: bool) -> Result<Self> {
        let binary = find_binary("redis-server", "TIERFLOW_REDIS_SERVER")?;
        let mut dir = tempfile::tempdir().context("creating redis dir")?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let mut server = Self {
                service: None,
                binary: binary.clone(),
                port: free_port()?,
                extra: extra.iter().map(|&a| a.to_owned()).collect(),
                speaks_tls: tls,
                persistent,
                password: None,
                tls: None,
                dir,
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    last_error = Some(e);
                    dir = server.dir;
                }
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    fn spawn(&mut self) -> Result<()> {
        let tls = self.speaks_tls;
        let (plain_port, tls_port) = if tls { (0, self.port) } else { (self.port, 0) };
        let appendonly = if self.persistent { "yes" } else { "no" };
        let mut command = Command::new(&self.binary);
        command
            .args(["--port", &plain_port.to_string()])
            .args(["--tls-port", &tls_port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", appendonly])
            .args(["--appendfsync", "always"])
            .args(["--protected-mode", "no"])
            .args(&self.extra)
            .arg("--dir")
            .arg(self.dir.path());
        self.service = Some(Service::spawn(
            "redis-server",
            command,
            self.port,
            self.dir.path().join(format!("redis-{}.log", self.port)),
            // With a password, PING answers -NOAUTH: still proof the server is up. A TLS
            // port cannot be pinged in plain text; accepting connections is enough.
            |addr| {
                if tls {
                    accepts(addr)
                } else {
                    answers(addr, b"PING\r\n", b"+PONG") || answers(addr, b"PING\r\n", b"-NOAUTH")
                }
            },
            READY_TIMEOUT,
        )?);
        Ok(())
    }

    /// `redis://127.0.0.1:PORT/`, or `redis://:PASSWORD@127.0.0.1:PORT/` with a password.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        match &self.password {
            Some(password) => format!("{scheme}://:{password}@127.0.0.1:{}/", self.port),
            None => format!("{scheme}://127.0.0.1:{}/", self.port),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id. Panics while the server is stopped.
    pub fn pid(&self) -> u32 {
        self.service
            .as_ref()
            .map(Service::pid)
            .expect("redis-server is stopped: it has no pid")
    }

    pub fn is_running(&self) -> bool {
        self.service.is_some()
    }

    /// Freezes the server (SIGSTOP): connections stay open and data stays in memory, but
    /// nothing is answered until [`RedisServer::resume`] — an outage that loses nothing, which
    /// killing an unpersisted server would not be. Dropping a paused server still kills it.
    pub fn pause(&self) -> Result<()> {
        signal(self.running_pid()?, "STOP")
    }

    /// Lets a paused server run again (SIGCONT); it answers what queued up meanwhile.
    pub fn resume(&self) -> Result<()> {
        signal(self.running_pid()?, "CONT")
    }

    /// Kills the server (as a crash would): connections drop, new ones are refused until
    /// [`RedisServer::restart`]. Only a [`RedisServer::start_persistent`] server keeps its
    /// data through this.
    pub fn stop(&mut self) {
        if let Some(mut service) = self.service.take() {
            service.kill();
        }
    }

    /// Starts the server again on the same port and directory (stopping it first if it runs).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// The server's recent log lines, for failure messages.
    pub fn log_tail(&self) -> String {
        self.service
            .as_ref()
            .map(Service::log_tail)
            .unwrap_or_default()
    }

    fn running_pid(&self) -> Result<u32> {
        self.service
            .as_ref()
            .map(Service::pid)
            .context("redis-server is stopped")
    }
}

/// Sends `SIG{name}` to `pid` with kill(1): the workspace forbids the `unsafe` a direct
/// `kill(2)` would need.
fn signal(pid: u32, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .with_context(|| format!("running kill -{name} {pid}"))?;
    anyhow::ensure!(status.success(), "kill -{name} {pid} failed: {status}");
    Ok(())
}

/// Where the broker keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerStorage {
    /// Fast; lost when the broker stops.
    Memory,
    /// SQLite file in the broker's own directory; survives [`Broker::restart`].
    Sqlite,
}

/// A private tansu broker on a free loopback port.
#[derive(Debug)]
pub struct Broker {
    service: Option<Service>,
    binary: PathBuf,
    port: u16,
    /// The port clients are told to connect to (a proxy's, in front of `port`).
    advertised_port: u16,
    /// Started with `--authentication`: every request but the SASL ones needs a login.
    authentication: bool,
    storage: BrokerStorage,
    dir: TempDir,
}

impl Broker {
    /// An in-memory broker: the default for tests.
    pub fn start() -> Result<Self> {
        Self::start_with(BrokerStorage::Memory)
    }

    pub fn start_with(storage: BrokerStorage) -> Result<Self> {
        Self::start_advertising(storage, None)
    }

    /// Starts on a free port, telling clients to connect to `advertised` (default: the
    /// broker's own port).
    fn start_advertising(storage: BrokerStorage, advertised: Option<u16>) -> Result<Self> {
        let binary = find_binary("tansu", "TIERFLOW_TANSU")?;
        let mut dir = tempfile::tempdir().context("creating broker dir")?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let mut broker = Self {
                service: None,
                binary: binary.clone(),
                port,
                advertised_port: advertised.unwrap_or(port),
                authentication: false,
                storage,
                dir,
            };
            match broker.spawn() {
                Ok(()) => return Ok(broker),
                Err(e) => {
                    last_error = Some(e);
                    dir = broker.dir;
                }
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    fn spawn(&mut self) -> Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised_port);
        let storage = match self.storage {
            BrokerStorage::Memory => "memory://tansu/",
            BrokerStorage::Sqlite => "sqlite://tansu/",
        };
        let mut command = Command::new(&self.binary);
        command
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &advertised])
            .args(["--storage-engine", storage])
            .current_dir(self.dir.path());
        if self.authentication {
            command.arg("--authentication");
        }
        // tansu also reads these from the environment; ours must not leak in.
        for var in [
            "CLUSTER_ID",
            "LISTENER_URL",
            "ADVERTISED_LISTENER_URL",
            "STORAGE_ENGINE",
            "SCHEMA_REGISTRY",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ] {
            command.env_remove(var);
        }
        let log = self.dir.path().join(format!("tansu-{}.log", self.port));
        self.service = Some(Service::spawn(
            "tansu",
            command,
            self.port,
            log,
            accepts,
            READY_TIMEOUT,
        )?);
        Ok(())
    }

    /// `bootstrap.servers` for clients.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn storage(&self) -> BrokerStorage {
        self.storage
    }

    pub fn is_running(&self) -> bool {
        self.service.is_some()
    }

    /// Kills the broker (as a crash would). Clients see it gone until [`Broker::restart`].
    pub fn stop(&mut self) {
        if let Some(mut service) = self.service.take() {
            service.kill();
        }
    }

    /// Starts the broker again on the same port and directory. With
    /// [`BrokerStorage::Sqlite`] topics, records and committed offsets survive.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// The broker's recent log lines, for failure messages.
    pub fn log_tail(&self) -> String {
        self.service
            .as_ref()
            .map(Service::log_tail)
            .unwrap_or_default()
    }
}

/// A tansu broker behind TLS that requires a SASL/SCRAM-SHA-512 login: what a managed Kafka
/// looks like to a client (`security.protocol = SASL_SSL`). tansu 0.6.0 checks SCRAM
/// logins against the credentials it stores but does not serve TLS itself, so a
/// TLS-terminating proxy (certificate signed by a throwaway CA) stands in front of it and
/// the broker advertises the proxy's address.
#[derive(Debug)]
pub struct SecureBroker {
    // Field order is drop order: the proxy goes before the broker and the certificates.
    _proxy: TlsProxy,
    broker: Broker,
    port: u16,
    user: String,
    ca: PathBuf,
    _certificates: TempDir,
}

impl SecureBroker {
    /// Starts the broker with one SCRAM-SHA-512 user, `user` / `password`.
    pub fn start(user: &str, password: &str) -> Result<Self> {
        let certificates = tempfile::tempdir().context("creating a certificate dir")?;
        let files = crate::tls::write_server_certificates(certificates.path())?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the proxy")?;
        let port = listener.local_addr()?.port();
        // The credentials are stored through the admin API before logins are required, on
        // storage that survives the restart that turns them on.
        let mut broker = Broker::start_advertising(BrokerStorage::Sqlite, Some(port))?;
        let output = Command::new(&broker.binary)
            .args(["user", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", broker.port))
            .args(["--mechanism", "scram512", user, password])
            .output()
            .context("running `tansu user create`")?;
        anyhow::ensure!(
            output.status.success(),
            "`tansu user create` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        broker.authentication = true;
        broker.restart()?;
        let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], broker.port));
        let proxy = TlsProxy::start(listener, upstream, &files.cert, &files.key)?;
        Ok(Self {
            _proxy: proxy,
            broker,
            port,
            user: user.to_owned(),
            ca: files.ca,
            _certificates: certificates,
        })
    }

    /// `bootstrap.servers` for clients: the TLS address.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The CA that signed the broker's certificate (PEM), for `ssl.ca.location`.
    pub fn ca_file(&self) -> &std::path::Path {
        &self.ca
    }

    /// librdkafka properties of a client of this broker, all but `sasl.password`.
    pub fn client_properties(&self) -> Vec<(&'static str, String)> {
        vec![
            ("security.protocol", "SASL_SSL".to_owned()),
            ("sasl.mechanisms", "SCRAM-SHA-512".to_owned()),
            ("sasl.username", self.user.clone()),
            ("ssl.ca.location", self.ca.display().to_string()),
        ]
    }

    /// The broker's recent log lines, for failure messages.
    pub fn log_tail(&self) -> String {
        self.broker.log_tail()
    }
}
