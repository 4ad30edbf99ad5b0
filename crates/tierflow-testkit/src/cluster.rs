//! A local Redis Cluster of three masters (no replicas) on free loopback ports, for testing
//! that tierflow's state works across hash slots. Built with plain RESP commands, so only
//! `redis-server` is needed (no `redis-cli`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::process::{Service, answers, find_binary, free_port};

const SLOTS: u32 = 16_384;

/// Three cluster-enabled redis-servers that own all 16,384 slots between them.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Service>,
    _dir: TempDir,
}

impl RedisCluster {
    pub fn start() -> Result<Self> {
        let binary = find_binary("redis-server", "TIERFLOW_REDIS_SERVER")?;
        let dir = tempfile::tempdir().context("creating cluster dir")?;
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_port()?;
            let mut command = Command::new(&binary);
            command
                .args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .args(["--protected-mode", "no"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--cluster-node-timeout", "5000"])
                .arg("--dir")
                .arg(dir.path());
            nodes.push(Service::spawn(
                "redis-server (cluster)",
                command,
                port,
                dir.path().join(format!("redis-{port}.log")),
                |addr| answers(addr, b"PING\r\n", b"+PONG"),
                Duration::from_secs(20),
            )?);
        }
        // Split the slots evenly, introduce the nodes to each other, wait for agreement.
        let per_node = SLOTS / 3;
        for (i, node) in nodes.iter().enumerate() {
            let first = i as u32 * per_node;
            let last = if i == 2 {
                SLOTS - 1
            } else {
                first + per_node - 1
            };
            command(
                node.addr(),
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &first.to_string(),
                    &last.to_string(),
                ],
            )?;
        }
        let first = nodes[0].addr();
        for node in &nodes[1..] {
            command(
                first,
                &["CLUSTER", "MEET", "127.0.0.1", &node.port().to_string()],
            )?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut ready = true;
            for node in &nodes {
                let info = command(node.addr(), &["CLUSTER", "INFO"])?;
                ready &=
                    info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3");
            }
            if ready {
                return Ok(Self { nodes, _dir: dir });
            }
            if Instant::now() > deadline {
                bail!("the local Redis Cluster did not reach cluster_state:ok within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Seed URLs, comma-separated, as `RedisConfig { cluster: true, url }` expects.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}/", n.port()))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(Service::port).collect()
    }
}

/// Sends one command and returns the reply as text; an error reply is an error.
fn command(addr: SocketAddr, args: &[&str]) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    match line.as_bytes().first() {
        Some(b'+') | Some(b':') => Ok(line[1..].trim_end().to_owned()),
        Some(b'-') => bail!("{args:?}: {}", line[1..].trim_end()),
        Some(b'$') => {
            let len: usize = line[1..].trim_end().parse().context("bulk length")?;
            let mut body = vec![0u8; len + 2];
            reader.read_exact(&mut body)?;
            body.truncate(len);
            Ok(String::from_utf8_lossy(&body).into_owned())
        }
        _ => bail!("{args:?}: unexpected reply {line:?}"),
    }
}
