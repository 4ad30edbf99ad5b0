//! `tierflow run` as a process, against a real broker (tansu) and a real redis-server from the
//! testkit. The crash test SIGKILLs the pipeline at random points many times, restarts it,
//! and checks that the final Redis state equals the offline replay's (nothing lost, nothing
//! double-counted), that the outputs deduped by idempotency key are exactly the predicted
//! set, and that the offsets are committed to the end. Then SIGTERM stops it with exit 0.

#[path = "../crates/tierflow-pipeline/tests/common/mod.rs"]
mod pipeline_common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use burn::prelude::Device;
use pipeline_common::{
    Read, check, check_exposures, check_outcomes, check_triggers, ends, generated, observe,
    produce_records, synthetic, test_kafka, topics,
};
use rand::{Rng, SeedableRng};
use tierflow_model::{Artifact, Scorer};
use tierflow_pipeline::{PipelineConfig, TopicsConfig, offline, telemetry};
use tierflow_store::{RedisConfig, RedisStore, StateStore};
use tierflow_stream::consume::committed_offsets;
use tierflow_stream::{KafkaConfig, ensure_topics};
use tierflow_testkit::{SecureBroker, broker, redis, unique_name};

/// A plain HTTP/1.1 GET: (status, body).
fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

struct Setup {
    config_file: tempfile::NamedTempFile,
    group: String,
    key_prefix: String,
    log_dir: tempfile::TempDir,
}

/// The example rules file shipped in `deploy/`: the crash test runs the campaigns with it.
fn rules_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rules.toml")
}

fn write_config(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    redis_url: &str,
    batch: usize,
) -> Result<Setup> {
    let group = unique_name("group");
    let key_prefix = unique_name("crash");
    let mut file = tempfile::NamedTempFile::new()?;
    writeln!(
        file,
        r#"
[kafka]
brokers = "{brokers}"
[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"

[topics]
clickstream = "{clickstream}"
tier_changed = "{tier_changed}"
campaign_triggered = "{campaign_triggered}"
campaign_control = "{campaign_control}"
campaign_outcome = "{campaign_outcome}"
user_score = "{user_score}"
dead_letter = "{dead_letter}"

[redis]
url = "{redis_url}"
key_prefix = "{key_prefix}"

[pipeline]
group_id = "{group}"
batch_max_events = {batch}
# Event time only: the offline reference has no wall clock.
idle_partition_secs = 0

[http]
listen = "127.0.0.1:0"

[campaigns]
rules = "{rules}"
"#,
        brokers = kafka.brokers,
        clickstream = topics.clickstream,
        tier_changed = topics.tier_changed,
        campaign_triggered = topics.campaign_triggered,
        campaign_control = topics.campaign_control,
        campaign_outcome = topics.campaign_outcome,
        rules = rules_file().display(),
        user_score = topics.user_score,
        dead_letter = topics.dead_letter,
    )?;
    Ok(Setup {
        config_file: file,
        group,
        key_prefix,
        log_dir: tempfile::tempdir()?,
    })
}

fn spawn(setup: &Setup, attempt: usize) -> Result<Child> {
    let log = std::fs::File::create(setup.log_dir.path().join(format!("run-{attempt}.log")))?;
    Command::new(env!("CARGO_BIN_EXE_tierflow"))
        .args(["run", "--config"])
        .arg(setup.config_file.path())
        .env_remove("TIERFLOW_CONFIG")
        .env(
            "RUST_LOG",
            "info,tierflow_pipeline=debug,librdkafka=warn,rdkafka=warn",
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting tierflow run")
}

fn log_tail(dir: &Path, attempt: usize) -> String {
    let text = std::fs::read_to_string(dir.join(format!("run-{attempt}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The HTTP port run `attempt` logged it listens on (`http.listen` port 0: a port fixed for
/// all restarts could be taken by another test between a kill and the next start).
fn logged_port(setup: &Setup, attempt: usize) -> Option<u16> {
    let text =
        std::fs::read_to_string(setup.log_dir.path().join(format!("run-{attempt}.log"))).ok()?;
    let line = text
        .lines()
        .find(|l| l.contains("serving") && l.contains("/metrics"))?;
    let after = line.split("127.0.0.1:").nth(1)?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Waits until `/readyz` answers 200 (the member joined its group); returns the HTTP port.
fn wait_ready(setup: &Setup, child: &mut Child, attempt: usize, timeout: Duration) -> Result<u16> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("tierflow run exited early with {status}");
        }
        if let Some(port) = logged_port(setup, attempt)
            && matches!(http_get(port, "/readyz"), Ok((200, _)))
        {
            return Ok(port);
        }
        ensure!(started.elapsed() < timeout, "not ready after {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn committed(
    kafka: &KafkaConfig,
    group: &str,
    topic: &str,
) -> std::collections::BTreeMap<i32, i64> {
    committed_offsets(kafka, group, topic).unwrap_or_default()
}

/// Waits until the group's committed offsets of `topic` reach `end`; fails when one of the
/// `running` processes (run number, child) exits first, or after `timeout`.
async fn wait_committed(
    kafka: &KafkaConfig,
    (group, topic): (&str, &str),
    end: &std::collections::BTreeMap<i32, i64>,
    running: &mut [(usize, &mut Child)],
    log_dir: &Path,
    timeout: Duration,
) -> Result<()> {
    let started = Instant::now();
    while tokio::task::block_in_place(|| committed(kafka, group, topic)) != *end {
        for (attempt, child) in running.iter_mut() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "tierflow run {attempt} exited with {status}:\n{}",
                    log_tail(log_dir, *attempt)
                );
            }
        }
        ensure!(started.elapsed() < timeout, "offsets never reached the end");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_and_double_counts_nothing() -> Result<()> {
    let kafka = test_kafka(broker().bootstrap_servers());
    let topics = topics(3);
    ensure_topics(&kafka, &topics.specs()).await?;
    // Most of the stream while the kills happen — paced, so the pipeline (faster than the
    // stream) is killed mid-stream, not after it caught up; the rest after the kills, so
    // the last run has work too.
    let stream = generated(&synthetic(400, 20, 11));
    let (head, tail) = stream.split_at(stream.len() * 9 / 10);
    let (head, tail) = (head.to_vec(), tail.to_vec());
    let head_records = head.len() as u64;
    let feeding = {
        let (kafka, topic) = (kafka.clone(), topics.clickstream.clone());
        tokio::spawn(async move {
            for chunk in head.chunks(1_000) {
                produce_records(&kafka, &topic, chunk).await?;
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
            anyhow::Ok(())
        })
    };
    let records = stream.len() as u64;
    let setup = write_config(&kafka, &topics, &redis().url(), 200)?;

    // Kill the pipeline at random moments after it joined, until it has been killed often
    // enough or it finished everything.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261129);
    let mut kills = 0;
    let mut progress = Vec::new();
    let mut attempt = 0;
    let finished = loop {
        attempt += 1;
        let mut child = spawn(&setup, attempt)?;
        let port = wait_ready(&setup, &mut child, attempt, Duration::from_secs(60))
            .with_context(|| log_tail(setup.log_dir.path(), attempt))?;
        if kills >= 8 {
            break (child, port);
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..800)));
        child.kill()?;
        child.wait()?;
        kills += 1;
        let done: i64 =
            tokio::task::block_in_place(|| committed(&kafka, &setup.group, &topics.clickstream))
                .values()
                .sum();
        progress.push(done);
        if done >= head_records as i64 {
            // Finished before the kill: one more run must find nothing to do.
            let mut child = spawn(&setup, attempt + 1)?;
            attempt += 1;
            let port = wait_ready(&setup, &mut child, attempt, Duration::from_secs(60))
                .with_context(|| log_tail(setup.log_dir.path(), attempt))?;
            break (child, port);
        }
    };
    let (mut child, port) = finished;
    let mid_stream = progress
        .iter()
        .filter(|d| **d < head_records as i64)
        .count();
    ensure!(
        mid_stream >= 3,
        "only {mid_stream} kills landed before the stream was done (committed at each kill: {progress:?} of {head_records})"
    );
    ensure!(
        progress.iter().any(|d| *d > 0 && *d < head_records as i64),
        "no kill landed mid-stream: committed {progress:?} of {head_records}"
    );
    feeding.await??;
    produce_records(&kafka, &topics.clickstream, &tail).await?;
    let input = pipeline_common::read_all(
        &kafka,
        &topics.clickstream,
        records as usize,
        Duration::from_secs(3),
    )
    .await?;
    let end = ends(&input);

    // The last run finishes the stream.
    wait_committed(
        &kafka,
        (&setup.group, &topics.clickstream),
        &end,
        &mut [(attempt, &mut child)],
        setup.log_dir.path(),
        Duration::from_secs(240),
    )
    .await?;

    // Metrics are served and name every stage; no user id in any label.
    let (status, metrics) = http_get(port, "/metrics")?;
    ensure!(status == 200, "/metrics answered {status}");
    for name in [
        telemetry::EVENTS_IN,
        telemetry::RECORDS_OUT,
        telemetry::STAGE_SECONDS,
        telemetry::BATCH_RECORDS,
        telemetry::DEAD_LETTERS,
        telemetry::REDIS_SECONDS,
        telemetry::SCORING_SECONDS,
        telemetry::SCORED,
        telemetry::TIER_CHANGES,
    ] {
        ensure!(metrics.contains(name), "/metrics lacks {name}");
    }
    ensure!(
        !metrics.contains("u000"),
        "a user id leaked into the metrics"
    );
    ensure!(http_get(port, "/healthz")?.0 == 200);

    // SIGTERM: finish, commit, exit 0.
    let status = terminate(&mut child, Duration::from_secs(30))?;
    ensure!(
        status.success(),
        "exit {status} after SIGTERM:\n{}",
        log_tail(setup.log_dir.path(), attempt)
    );

    // Everything against the offline replay, outputs deduped by idempotency key.
    let observed = observe(&kafka, &topics, &setup.group, records).await?;
    let config = PipelineConfig::default();
    let scorer = Scorer::new(&Artifact::embedded_default()?, &Device::flex())?;
    let sources: Vec<_> = observed.input.iter().map(Read::source).collect();
    let rules = tierflow_rules::RuleSet::parse(&std::fs::read_to_string(rules_file())?)?;
    let expected = offline::replay_with(&scorer, &config, Some(&rules), &sources)?;
    let store = RedisStore::connect(RedisConfig {
        key_prefix: setup.key_prefix.clone(),
        ..RedisConfig::new(redis().url())
    })
    .await?;
    let checked = match check(&observed, &expected, &store, scorer.version(), true).await {
        Ok(()) => check_triggers(&observed, &expected, true)
            .and_then(|()| check_outcomes(&observed, &expected, &rules, true).map(drop)),
        Err(e) => Err(e),
    };
    let checked = match checked {
        Ok(()) => check_exposures(&observed, &store, &rules).await.map(drop),
        Err(e) => Err(e),
    };
    if let Err(e) = checked {
        for a in 1..=attempt {
            let text = std::fs::read_to_string(setup.log_dir.path().join(format!("run-{a}.log")))
                .unwrap_or_default();
            if let Some(last) = text.lines().rfind(|l| l.contains("committing")) {
                eprintln!("run {a}: last {last}");
            }
            for line in text.lines().filter(|l| {
                l.contains("revoked")
                    || l.contains("first record")
                    || l.contains("assigned")
                    || l.contains("dropped")
                    || l.contains("WARN")
                    || l.contains("started")
            }) {
                eprintln!("run {a}: {line}");
            }
        }
        return Err(e);
    }
    ensure!(
        !observed.triggered.is_empty() && !observed.held.is_empty(),
        "the campaigns neither sent nor held out anything"
    );
    eprintln!(
        "{records} records, {kills} kills (committed at kill: {progress:?}), {} tier changes published for {} expected, {} campaign triggers sent and {} held out",
        observed.tier_changed.len(),
        expected.tier_changes.len(),
        observed.triggered.len(),
        observed.held.len()
    );
    Ok(())
}

/// Sends SIGTERM and waits for the exit: 0 expected (the caller checks).
fn terminate(child: &mut Child, within: Duration) -> Result<std::process::ExitStatus> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    ensure!(status.success(), "kill -TERM failed");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        ensure!(
            started.elapsed() < within,
            "no exit {within:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Scale-out: three `tierflow run` processes in one group on a 12-partition topic while the
/// stream flows — a second and a third join, then the first leaves (SIGTERM) — end with the
/// state, the deduped outputs and the offsets a single process gives (the offline replay,
/// which the other tests hold a single process to).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_joining_and_leaving_on_twelve_partitions_equal_one() -> Result<()> {
    let kafka = test_kafka(broker().bootstrap_servers());
    let topics = topics(12);
    ensure_topics(&kafka, &topics.specs()).await?;
    let stream = generated(&synthetic(400, 20, 13));
    let records = stream.len() as u64;
    let feeding = {
        let (kafka, topic) = (kafka.clone(), topics.clickstream.clone());
        tokio::spawn(async move {
            for chunk in stream.chunks(1_000) {
                produce_records(&kafka, &topic, chunk).await?;
                tokio::time::sleep(Duration::from_millis(1_000)).await;
            }
            anyhow::Ok(())
        })
    };
    let setup = write_config(&kafka, &topics, &redis().url(), 200)?;
    let done = |kafka: &KafkaConfig| -> i64 {
        tokio::task::block_in_place(|| committed(kafka, &setup.group, &topics.clickstream))
            .values()
            .sum()
    };
    let long = Duration::from_secs(120);

    let mut first = spawn(&setup, 1)?;
    wait_ready(&setup, &mut first, 1, long).with_context(|| log_tail(setup.log_dir.path(), 1))?;
    let started = Instant::now();
    while done(&kafka) < records as i64 / 6 {
        ensure!(
            started.elapsed() < long,
            "the first process made no progress"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut second = spawn(&setup, 2)?;
    wait_ready(&setup, &mut second, 2, long).with_context(|| log_tail(setup.log_dir.path(), 2))?;
    let mut third = spawn(&setup, 3)?;
    wait_ready(&setup, &mut third, 3, long).with_context(|| log_tail(setup.log_dir.path(), 3))?;
    ensure!(
        !feeding.is_finished(),
        "the stream ended before every process joined; produce more"
    );
    // The first leaves while the stream still flows.
    let left = terminate(&mut first, long)?;
    ensure!(
        left.success(),
        "the first process exited {left}:\n{}",
        log_tail(setup.log_dir.path(), 1)
    );
    let at_leave = done(&kafka);
    feeding.await??;
    let input = pipeline_common::read_all(
        &kafka,
        &topics.clickstream,
        records as usize,
        Duration::from_secs(3),
    )
    .await?;
    let end = ends(&input);
    wait_committed(
        &kafka,
        (&setup.group, &topics.clickstream),
        &end,
        &mut [(2, &mut second), (3, &mut third)],
        setup.log_dir.path(),
        Duration::from_secs(240),
    )
    .await?;
    for (attempt, child) in [(2, &mut second), (3, &mut third)] {
        let status = terminate(child, long)?;
        ensure!(
            status.success(),
            "process {attempt} exited {status}:\n{}",
            log_tail(setup.log_dir.path(), attempt)
        );
    }
    ensure!(
        at_leave < records as i64,
        "the first process left after the stream was done ({at_leave} of {records})"
    );

    let observed = observe(&kafka, &topics, &setup.group, records).await?;
    let scorer = Scorer::new(&Artifact::embedded_default()?, &Device::flex())?;
    let sources: Vec<_> = observed.input.iter().map(Read::source).collect();
    let rules = tierflow_rules::RuleSet::parse(&std::fs::read_to_string(rules_file())?)?;
    let expected =
        offline::replay_with(&scorer, &PipelineConfig::default(), Some(&rules), &sources)?;
    let store = RedisStore::connect(RedisConfig {
        key_prefix: setup.key_prefix.clone(),
        ..RedisConfig::new(redis().url())
    })
    .await?;
    check(&observed, &expected, &store, scorer.version(), true).await?;
    check_triggers(&observed, &expected, true)?;
    check_outcomes(&observed, &expected, &rules, true)?;
    check_exposures(&observed, &store, &rules).await?;
    // Every process did part of the work, and stopped cleanly.
    for attempt in 1..=3 {
        let log = std::fs::read_to_string(setup.log_dir.path().join(format!("run-{attempt}.log")))?;
        let processed: Option<u64> = log
            .lines()
            .rfind(|l| l.contains("stopped cleanly"))
            .and_then(|l| l.split("records=").nth(1))
            .and_then(|r| {
                r.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .ok()
            });
        ensure!(
            processed.is_some_and(|n| n > 0),
            "process {attempt} processed {processed:?} records:\n{}",
            log_tail(setup.log_dir.path(), attempt)
        );
    }
    Ok(())
}

/// A client config for the secured broker: TLS checked against its CA, SCRAM login.
fn secure_kafka(broker: &SecureBroker, password: &str) -> KafkaConfig {
    let mut kafka = test_kafka(broker.bootstrap_servers());
    for (key, value) in broker.client_properties() {
        kafka.properties.insert(key.to_owned(), value);
    }
    kafka
        .properties
        .insert("sasl.password".to_owned(), password.to_owned());
    kafka
}

/// A secured broker whose user `tierflow` logs in with `password`, a client config for it, and
/// two-partition topics created on it.
async fn secure_topics(
    password: &'static str,
) -> Result<(SecureBroker, KafkaConfig, TopicsConfig)> {
    let broker =
        tokio::task::spawn_blocking(move || SecureBroker::start("tierflow", password)).await??;
    let kafka = secure_kafka(&broker, password);
    let topics = topics(2);
    ensure_topics(&kafka, &topics.specs())
        .await
        .with_context(|| broker.log_tail())?;
    Ok((broker, kafka, topics))
}

/// `[kafka.properties]` lines for a `tierflow run` config: the secured broker's client
/// settings, without the password (that comes from a secrets file).
fn kafka_properties_toml(broker: &SecureBroker) -> String {
    broker
        .client_properties()
        .iter()
        .map(|(key, value)| format!("\"{key}\" = \"{value}\"\n"))
        .collect()
}

/// A `tierflow run` config for `broker` (its client settings; the SASL password from
/// `kafka_password_file`), `topics`, Redis at `redis_url` under `key_prefix` (or the URL in
/// `redis_url_file`, which replaces it) and consumer group `group`.
fn secure_run_config(
    broker: &SecureBroker,
    topics: &TopicsConfig,
    (redis_url, redis_url_file): (&str, Option<&Path>),
    key_prefix: &str,
    group: &str,
    kafka_password_file: &Path,
) -> Result<tempfile::NamedTempFile> {
    let redis_url_secret = redis_url_file
        .map(|file| format!("redis_url_file = \"{}\"\n", file.display()))
        .unwrap_or_default();
    let mut config_file = tempfile::NamedTempFile::new()?;
    writeln!(
        config_file,
        r#"
[kafka]
brokers = "{brokers}"
[kafka.properties]
{properties}
[topics]
clickstream = "{clickstream}"
tier_changed = "{tier_changed}"
user_score = "{user_score}"
dead_letter = "{dead_letter}"
[redis]
url = "{redis_url}"
key_prefix = "{key_prefix}"
[pipeline]
group_id = "{group}"
[http]
listen = "127.0.0.1:0"
[secrets]
{redis_url_secret}[secrets.kafka_property_files]
"sasl.password" = "{kafka_password_file}"
"#,
        brokers = broker.bootstrap_servers(),
        properties = kafka_properties_toml(broker),
        clickstream = topics.clickstream,
        tier_changed = topics.tier_changed,
        user_score = topics.user_score,
        dead_letter = topics.dead_letter,
        kafka_password_file = kafka_password_file.display(),
    )?;
    Ok(config_file)
}

/// Secrets from files, against services that need them: the Redis URL with its password
/// and the Kafka SASL password come from mounted files; the broker speaks only TLS (checked
/// against a CA) and requires a SCRAM-SHA-512 login, Redis requires AUTH. The pipeline does
/// its whole job through them, and no log line of the run — debug level included — holds
/// either secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_from_files_are_used_and_never_logged() -> Result<()> {
    const REDIS_PASSWORD: &str = "redis-pw-7f3a9c";
    const KAFKA_PASSWORD: &str = "kafka-pw-51d2e8";
    let secured = tokio::task::spawn_blocking(|| {
        tierflow_testkit::RedisServer::start_with_password(REDIS_PASSWORD)
    })
    .await??;
    let (secure_broker, kafka, topics) = secure_topics(KAFKA_PASSWORD).await?;
    let stream = generated(&synthetic(40, 5, 3));
    produce_records(&kafka, &topics.clickstream, &stream).await?;
    let input = pipeline_common::read_all(
        &kafka,
        &topics.clickstream,
        stream.len(),
        Duration::from_secs(3),
    )
    .await?;
    let end = ends(&input);

    let dir = tempfile::tempdir()?;
    let redis_url_file = dir.path().join("redis-url");
    std::fs::write(&redis_url_file, format!("{}\n", secured.url()))?;
    ensure!(secured.url().contains(REDIS_PASSWORD));
    let kafka_password_file = dir.path().join("kafka-password");
    std::fs::write(&kafka_password_file, KAFKA_PASSWORD)?;
    let key_prefix = unique_name("secret");
    let group = unique_name("group");
    let config_file = secure_run_config(
        &secure_broker,
        &topics,
        ("redis://127.0.0.1:1/", Some(&redis_url_file)),
        &key_prefix,
        &group,
        &kafka_password_file,
    )?;
    let setup = Setup {
        config_file,
        group: group.clone(),
        key_prefix: key_prefix.clone(),
        log_dir: tempfile::tempdir()?,
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_tierflow"))
        .args(["run", "--config"])
        .arg(setup.config_file.path())
        .env_remove("TIERFLOW_CONFIG")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(
            setup.log_dir.path().join("run-1.log"),
        )?)
        .spawn()?;
    wait_ready(&setup, &mut child, 1, Duration::from_secs(60))
        .with_context(|| log_tail(setup.log_dir.path(), 1))?;
    wait_committed(
        &kafka,
        (&group, &topics.clickstream),
        &end,
        &mut [(1, &mut child)],
        setup.log_dir.path(),
        Duration::from_secs(120),
    )
    .await?;
    let status = terminate(&mut child, Duration::from_secs(30))?;
    ensure!(status.success(), "exit {status}");

    // The states went to the password-protected server.
    let store = RedisStore::connect(RedisConfig {
        key_prefix,
        ..RedisConfig::new(secured.url())
    })
    .await?;
    let user = stream
        .first()
        .map(|(user, _)| user.as_str())
        .context("a user")?;
    ensure!(
        matches!(store.load(&[user]).await?.as_slice(), [Ok(Some(_))]),
        "no state for {user} in the password-protected redis"
    );
    let log = std::fs::read_to_string(setup.log_dir.path().join("run-1.log"))?;
    ensure!(
        log.contains("DEBUG") && log.contains("stopped cleanly"),
        "the run's debug log is not all there:\n{log}"
    );
    for secret in [REDIS_PASSWORD, KAFKA_PASSWORD] {
        let leaks: Vec<&str> = log.lines().filter(|l| l.contains(secret)).take(3).collect();
        ensure!(leaks.is_empty(), "a secret is in the log: {leaks:?}");
    }
    Ok(())
}

/// A wrong Kafka password is a configuration error, not an outage: `tierflow run` stops with
/// a clear message and a failure status instead of retrying the login for ever, commits
/// nothing, and does not log the password it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_kafka_login_stops_the_run_with_a_clear_error() -> Result<()> {
    const RIGHT: &str = "kafka-pw-a81f03";
    const WRONG: &str = "kafka-pw-wrong-99c2";
    let (secure_broker, kafka, topics) = secure_topics(RIGHT).await?;
    let stream = generated(&synthetic(10, 3, 5));
    produce_records(&kafka, &topics.clickstream, &stream).await?;

    let dir = tempfile::tempdir()?;
    let password_file = dir.path().join("kafka-password");
    std::fs::write(&password_file, WRONG)?;
    let group = unique_name("group");
    let config_file = secure_run_config(
        &secure_broker,
        &topics,
        (&redis().url(), None),
        &unique_name("refused"),
        &group,
        &password_file,
    )?;
    // The run must end by itself.
    let (status, log) = run_to_exit("run", config_file.path(), &dir.path().join("run.log")).await?;
    ensure!(
        !status.success(),
        "a refused login exited with {status}:\n{log}"
    );
    ensure!(
        log.contains("refused this client") && log.contains("sasl.password"),
        "no clear message about the refused login:\n{log}"
    );
    let leaks: Vec<&str> = log.lines().filter(|l| l.contains(WRONG)).take(3).collect();
    ensure!(leaks.is_empty(), "the password is in the log: {leaks:?}");
    // Nothing was committed for the group.
    let committed =
        tokio::task::block_in_place(|| committed_offsets(&kafka, &group, &topics.clickstream))?;
    ensure!(
        committed.is_empty(),
        "offsets committed without a login: {committed:?}"
    );

    // The admin path too: `tierflow topics` with the same config fails with the same message
    // instead of waiting on a login that cannot succeed.
    let (status, log) =
        run_to_exit("topics", config_file.path(), &dir.path().join("topics.log")).await?;
    ensure!(
        !status.success(),
        "tierflow topics with a refused login exited with {status}:\n{log}"
    );
    ensure!(
        log.contains("refused this client") && log.contains("sasl.password"),
        "tierflow topics gave no clear message about the refused login:\n{log}"
    );
    ensure!(
        !log.contains(WRONG),
        "tierflow topics logged the password:\n{log}"
    );
    Ok(())
}

/// Runs `tierflow <command> --config <config>` with debug logging into `log_path` and waits
/// for it to exit by itself; kills it and fails with its log after 90 s. Returns the exit
/// status and the log.
async fn run_to_exit(
    command: &str,
    config: &Path,
    log_path: &Path,
) -> Result<(std::process::ExitStatus, String)> {
    const LIMIT: Duration = Duration::from_secs(90);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tierflow"))
        .args([command, "--config"])
        .arg(config)
        .env_remove("TIERFLOW_CONFIG")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log_path)?)
        .kill_on_drop(true)
        .spawn()?;
    match tokio::time::timeout(LIMIT, child.wait()).await {
        Ok(status) => Ok((status?, std::fs::read_to_string(log_path)?)),
        Err(_) => {
            child.kill().await?;
            bail!(
                "tierflow {command} still running after {LIMIT:?} (it should stop by itself):\n{}",
                std::fs::read_to_string(log_path)?
            )
        }
    }
}
