//! Real services for tests: each test binary gets its own `redis-server` and Kafka-protocol
//! broker (tansu) on free loopback ports, plus random topic and group names. Nothing is shared
//! between test runs and nothing is left running: services die with their handle, and a
//! watchdog kills them if the test process itself dies first (panic=abort, SIGKILL).
//!
//! The binaries are found through `TIERFLOW_REDIS_SERVER` / `TIERFLOW_TANSU`, then `PATH`,
//! then `~/.cache/tierflow/bin` (where `tests/run.sh` installs tansu).

mod cluster;
mod process;
mod proxy;
mod services;
mod tls;

pub use cluster::RedisCluster;
pub use process::{Service, find_binary};
pub use services::{Broker, BrokerStorage, RedisServer, SecureBroker};

use std::sync::OnceLock;

use rand::Rng;

/// This test binary's redis-server, started on first use.
pub fn redis() -> &'static RedisServer {
    static REDIS: OnceLock<RedisServer> = OnceLock::new();
    REDIS.get_or_init(|| RedisServer::start().unwrap_or_else(|e| panic!("{e:#}")))
}

/// This test binary's broker (in-memory storage), started on first use.
pub fn broker() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(|| Broker::start().unwrap_or_else(|e| panic!("{e:#}")))
}

/// A name no other test or run will use: `{prefix}-{pid}-{random}`.
pub fn unique_name(prefix: &str) -> String {
    let suffix: u64 = rand::rng().random();
    format!("{prefix}-{}-{suffix:016x}", std::process::id())
}
