//! The harness gives each test binary real, private services and cleans them up.

use std::path::Path;

use tierflow_testkit::{RedisServer, redis, unique_name};

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would, but Drop reaps.
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn redis_is_reached_through_the_harness() -> anyhow::Result<()> {
    let client = ::redis::Client::open(redis().url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let key = unique_name("harness");
    let () = ::redis::cmd("SET")
        .arg(&key)
        .arg("v1")
        .query_async(&mut conn)
        .await?;
    let value: String = ::redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
    assert_eq!(value, "v1");
    let n: i64 = ::redis::cmd("INCRBY")
        .arg(format!("{key}:n"))
        .arg(5)
        .query_async(&mut conn)
        .await?;
    assert_eq!(n, 5);
    Ok(())
}

#[test]
fn private_servers_use_distinct_ports_and_die_with_their_handle() -> anyhow::Result<()> {
    let a = RedisServer::start()?;
    let b = RedisServer::start()?;
    assert_ne!(a.port(), b.port());
    assert_ne!(a.port(), 6379, "never the machine's default Redis");
    let (pid_a, pid_b) = (a.pid(), b.pid());
    assert!(alive(pid_a) && alive(pid_b));
    drop(a);
    assert!(!alive(pid_a), "redis-server {pid_a} outlived its handle");
    assert!(alive(pid_b));
    drop(b);
    assert!(!alive(pid_b));
    Ok(())
}

#[test]
fn unique_names_do_not_repeat() {
    let names: std::collections::HashSet<String> = (0..1000).map(|_| unique_name("t")).collect();
    assert_eq!(names.len(), 1000);
}
