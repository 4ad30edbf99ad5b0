//! `deploy/`, checked without a container engine: every compose, Prometheus, Grafana and
//! Kubernetes file parses; every `TIERFLOW_` variable and config file they hold is accepted by
//! tierflow's own config loader (which refuses unknown keys); dashboards, alerts and the
//! autoscaler name only metrics tierflow exports; compose creates exactly the configured
//! topics; probes, ports, replica bounds and the grace period agree with the config; and
//! `tierflow run`, started the way the Kubernetes Deployment starts it with the ConfigMap's
//! files, becomes ready against a real broker (tansu) and redis-server, consumes and scores a
//! generated stream, and exits 0 on SIGTERM.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize as _;
use serde_json::Value as Json;
use serde_norway::Value as Yaml;
use tierflow_pipeline::{TopicsConfig, telemetry};
use tierflow_testkit::{broker, redis, unique_name};

// ---------------------------------------------------------------------------------------------
// Reading deploy/

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Every document of a YAML file (Kubernetes files may hold several; empty ones are skipped).
fn yaml_documents(path: &Path) -> Result<Vec<Yaml>> {
    let text = read(path)?;
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(&text) {
        let value = Yaml::deserialize(document)
            .with_context(|| format!("{} is not valid YAML", path.display()))?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

fn yaml(path: &Path) -> Result<Yaml> {
    let mut documents = yaml_documents(path)?;
    ensure!(
        documents.len() == 1,
        "{}: {} YAML documents, expected one",
        path.display(),
        documents.len()
    );
    Ok(documents.remove(0))
}

/// `value.a.b.0.c`: mapping keys and sequence indices, with the whole path in the error.
fn at<'a>(value: &'a Yaml, path: &str) -> Result<&'a Yaml> {
    let mut here = value;
    for key in path.split('.') {
        here = match here {
            Yaml::Mapping(map) => map.get(key),
            Yaml::Sequence(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        }
        .with_context(|| format!("no `{path}` (missing `{key}`)"))?;
    }
    Ok(here)
}

/// One key that may itself hold dots (`prometheus.io/port`, `tierflow.toml`), as a string.
fn text_field<'a>(value: &'a Yaml, key: &str) -> Result<&'a str> {
    value
        .get(key)
        .and_then(Yaml::as_str)
        .with_context(|| format!("no string `{key}`"))
}

fn text_at<'a>(value: &'a Yaml, path: &str) -> Result<&'a str> {
    at(value, path)?
        .as_str()
        .with_context(|| format!("`{path}` is not a string"))
}

fn int_at(value: &Yaml, path: &str) -> Result<i64> {
    at(value, path)?
        .as_i64()
        .with_context(|| format!("`{path}` is not an integer"))
}

fn seq_at<'a>(value: &'a Yaml, path: &str) -> Result<&'a [Yaml]> {
    at(value, path)?
        .as_sequence()
        .map(Vec::as_slice)
        .with_context(|| format!("`{path}` is not a list"))
}

/// A scalar as the text an environment variable would carry.
fn scalar(value: &Yaml) -> Result<String> {
    Ok(match value {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => bail!("{other:?} is not a scalar"),
    })
}

/// A compose `environment:` (a mapping, or a list of `NAME=value`).
fn compose_environment(value: &Yaml) -> Result<Vec<(String, String)>> {
    match value {
        Yaml::Mapping(map) => map
            .iter()
            .map(|(name, value)| {
                Ok((
                    name.as_str().context("variable name")?.to_owned(),
                    scalar(value)?,
                ))
            })
            .collect(),
        Yaml::Sequence(items) => items
            .iter()
            .map(|item| {
                let item = item.as_str().context("environment entry")?;
                let (name, value) = item.split_once('=').unwrap_or((item, ""));
                Ok((name.to_owned(), value.to_owned()))
            })
            .collect(),
        other => bail!("environment is neither a mapping nor a list: {other:?}"),
    }
}

fn compose() -> Result<Yaml> {
    yaml(&deploy("compose/compose.yaml"))
}

fn compose_service<'a>(compose: &'a Yaml, name: &str) -> Result<&'a Yaml> {
    at(compose, &format!("services.{name}"))
}

fn compose_tierflow_environment() -> Result<Vec<(String, String)>> {
    compose_environment(at(&compose()?, "services.tierflow.environment")?)
}

/// Every object of the Kubernetes manifests kustomization.yaml lists.
fn kubernetes_objects() -> Result<Vec<Yaml>> {
    let kustomization = yaml(&deploy("k8s/kustomization.yaml"))?;
    let mut objects = Vec::new();
    for resource in seq_at(&kustomization, "resources")? {
        let file = resource.as_str().context("resource entry")?;
        objects.extend(yaml_documents(&deploy("k8s").join(file))?);
    }
    Ok(objects)
}

fn kubernetes_object(objects: &[Yaml], kind: &str, name: &str) -> Result<Yaml> {
    let found: Vec<&Yaml> = objects
        .iter()
        .filter(|o| {
            text_at(o, "kind").ok() == Some(kind) && text_at(o, "metadata.name").ok() == Some(name)
        })
        .collect();
    ensure!(found.len() == 1, "{} {kind} named {name}", found.len());
    Ok(found[0].clone())
}

fn only<'a>(objects: &'a [Yaml], kind: &str) -> Result<&'a Yaml> {
    let found: Vec<&Yaml> = objects
        .iter()
        .filter(|o| text_at(o, "kind").ok() == Some(kind))
        .collect();
    ensure!(found.len() == 1, "{} objects of kind {kind}", found.len());
    Ok(found[0])
}

/// The Deployment's one container.
fn tierflow_container(objects: &[Yaml]) -> Result<Yaml> {
    let deployment = kubernetes_object(objects, "Deployment", "tierflow")?;
    let containers = seq_at(&deployment, "spec.template.spec.containers")?;
    ensure!(containers.len() == 1, "{} containers", containers.len());
    Ok(containers[0].clone())
}

/// Placeholder for variables Kubernetes fills in (`valueFrom`): any string.
const FROM_KUBERNETES: &str = "from-kubernetes";

/// The container's environment; `valueFrom` variables get a placeholder string.
fn kubernetes_environment(container: &Yaml) -> Result<Vec<(String, String)>> {
    let Ok(env) = seq_at(container, "env") else {
        return Ok(Vec::new());
    };
    env.iter()
        .map(|var| {
            let name = text_at(var, "name")?.to_owned();
            let value = match at(var, "value") {
                Ok(value) => scalar(value)?,
                Err(_) => {
                    at(var, "valueFrom")?;
                    FROM_KUBERNETES.to_owned()
                }
            };
            Ok((name, value))
        })
        .collect()
}

/// `data.KEY` of the ConfigMap tierflow-config.
fn configmap_file(objects: &[Yaml], key: &str) -> Result<String> {
    let configmap = kubernetes_object(objects, "ConfigMap", "tierflow-config")?;
    Ok(text_field(at(&configmap, "data")?, key)?.to_owned())
}

/// The ConfigMap's tierflow.toml as a TOML table.
fn configmap_config(objects: &[Yaml]) -> Result<toml::Table> {
    configmap_file(objects, "tierflow.toml")?
        .parse()
        .context("the ConfigMap's tierflow.toml is not TOML")
}

/// `section.key` of a tierflow config table, else the default from deploy/tierflow.toml.
fn config_value(config: &toml::Table, section: &str, key: &str) -> Result<toml::Value> {
    if let Some(value) = config.get(section).and_then(|s| s.get(key)) {
        return Ok(value.clone());
    }
    documented_defaults()?
        .get(section)
        .and_then(|s| s.get(key))
        .cloned()
        .with_context(|| format!("{section}.{key} is not in deploy/tierflow.toml"))
}

/// deploy/tierflow.toml: every key with its default (a unit test keeps it equal to the code).
fn documented_defaults() -> Result<toml::Table> {
    read(&deploy("tierflow.toml"))?
        .parse()
        .context("deploy/tierflow.toml is not TOML")
}

/// The port of a `HOST:PORT` listen address.
fn port_of(listen: &str) -> Result<u16> {
    let (_, port) = listen
        .rsplit_once(':')
        .with_context(|| format!("{listen:?} is not HOST:PORT"))?;
    port.parse()
        .with_context(|| format!("{listen:?} has no port number"))
}

// ---------------------------------------------------------------------------------------------
// Running tierflow

/// `tierflow [--config FILE] rules check RULES` with exactly `env` as its `TIERFLOW_`
/// variables. Every command loads the configuration first (defaults, file, environment), and
/// the loader refuses unknown keys; `rules check` then needs nothing but the rules file.
fn config_check(config: Option<&Path>, rules: &Path, env: &[(String, String)]) -> Result<Output> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tierflow"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TIERFLOW_") {
            command.env_remove(name);
        }
    }
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    command
        .args(["rules", "check"])
        .arg(rules)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .context("running tierflow")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A plain HTTP/1.1 GET on loopback: (status, body).
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

/// A `tierflow run` child that is killed if the test ends before it exits.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The port `http.listen` port 0 bound, from the start-up log line.
    fn logged_port(&self) -> Option<u16> {
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("serving") && l.contains("/metrics"))?;
        let after = line.split("127.0.0.1:").nth(1)?;
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    }

    /// Polls `probe` until it yields a value; fails when the process exits or at `timeout`.
    fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut(&Self) -> Option<T>,
    ) -> Result<T> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "tierflow run exited with {status} while waiting for {what}:\n{}",
                    self.log_tail()
                );
            }
            if let Some(value) = probe(self) {
                return Ok(value);
            }
            ensure!(
                started.elapsed() < timeout,
                "no {what} after {timeout:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Metric names

/// The histograms among `telemetry::ALL`: Prometheus has only their `_bucket`, `_sum` and
/// `_count` series.
const HISTOGRAMS: &[&str] = &[
    telemetry::STAGE_SECONDS,
    telemetry::BATCH_RECORDS,
    telemetry::REDIS_SECONDS,
    telemetry::SCORING_SECONDS,
    telemetry::EVENT_TO_OUTPUT_SECONDS,
];

/// Every `tierflow_…` identifier in a PromQL expression (or in exposition text).
fn metric_names(expr: &str) -> Vec<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("tierflow_") {
        let preceded = rest[..i].chars().next_back().is_some_and(is_ident);
        let tail = &rest[i..];
        let end = tail.find(|c: char| !is_ident(c)).unwrap_or(tail.len());
        if !preceded {
            names.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The exported metric a series name belongs to, if tierflow exports one: a counter or gauge
/// by its own name, a histogram by `_bucket`, `_sum` or `_count`.
fn exported_metric(series: &str) -> Option<&'static str> {
    if let Some(&name) = telemetry::ALL.iter().find(|&&name| name == series) {
        return (!HISTOGRAMS.contains(&name)).then_some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = series.strip_suffix(suffix)?;
        HISTOGRAMS.iter().copied().find(|&h| h == base)
    })
}

/// Names in `expr` that are not series tierflow exports.
fn unknown_metrics(expr: &str) -> Vec<String> {
    metric_names(expr)
        .into_iter()
        .filter(|name| exported_metric(name).is_none())
        .collect()
}

/// The sum of a counter or gauge over its label sets, from Prometheus exposition text.
fn metric_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = match rest.chars().next()? {
                '{' => rest.rsplit_once(' ')?.1,
                ' ' => rest.trim(),
                _ => return None,
            };
            value.parse::<f64>().ok()
        })
        .sum()
}

/// Every query string of a Grafana dashboard: targets' `expr`, template variables' `query`
/// and `definition`.
fn dashboard_queries(value: &Json, out: &mut Vec<String>) {
    match value {
        Json::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query" | "definition", Json::String(s)) => out.push(s.clone()),
                    _ => dashboard_queries(value, out),
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

fn dashboard() -> Result<Json> {
    let path = deploy("grafana/dashboards/tierflow.json");
    serde_json::from_str(&read(&path)?).with_context(|| format!("{} is not JSON", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Static checks

#[test]
fn every_deploy_file_parses() -> Result<()> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, files)?;
            } else {
                files.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(&deploy(""), &mut files)?;
    let mut parsed = BTreeMap::<&str, usize>::new();
    for path in &files {
        let kind = match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => {
                ensure!(
                    !yaml_documents(path)?.is_empty(),
                    "{} is empty",
                    path.display()
                );
                "yaml"
            }
            Some("json") => {
                serde_json::from_str::<Json>(&read(path)?)
                    .with_context(|| format!("{} is not JSON", path.display()))?;
                "json"
            }
            Some("toml") => {
                read(path)?
                    .parse::<toml::Table>()
                    .with_context(|| format!("{} is not TOML", path.display()))?;
                "toml"
            }
            _ => continue,
        };
        *parsed.entry(kind).or_default() += 1;
    }
    // compose, prometheus x2, grafana provisioning x2, k8s x7; the dashboard; tierflow + rules.
    ensure!(
        parsed.get("yaml").copied().unwrap_or(0) >= 12
            && parsed.get("json") == Some(&1)
            && parsed.get("toml").copied().unwrap_or(0) >= 2,
        "parsed only {parsed:?}"
    );

    // Kubernetes: every manifest is listed by the kustomization, every object is complete,
    // and the ConfigMap's files are TOML.
    let kustomization = yaml(&deploy("k8s/kustomization.yaml"))?;
    let listed: BTreeSet<&str> = seq_at(&kustomization, "resources")?
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    for entry in std::fs::read_dir(deploy("k8s"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        ensure!(
            listed.contains(name.as_str())
                || name == "kustomization.yaml"
                || name == "prometheus-adapter-values.yaml",
            "deploy/k8s/{name} is not listed in kustomization.yaml"
        );
    }
    let objects = kubernetes_objects()?;
    ensure!(objects.len() >= 5, "{} Kubernetes objects", objects.len());
    for object in &objects {
        for key in ["apiVersion", "kind", "metadata.name"] {
            text_at(object, key)?;
        }
    }
    for key in ["tierflow.toml", "rules.toml"] {
        configmap_file(&objects, key)?
            .parse::<toml::Table>()
            .with_context(|| format!("the ConfigMap's {key} is not TOML"))?;
    }
    Ok(())
}

/// The loader drops `TIERFLOW_` variables without `__` silently (they belong to the command
/// line), so a variable meant as configuration must have one.
fn check_variable_names(origin: &str, env: &[(String, String)]) -> Result<usize> {
    let mut count = 0;
    for (name, _) in env.iter().filter(|(name, _)| name.starts_with("TIERFLOW_")) {
        ensure!(
            name.contains("__") || name == "TIERFLOW_CONFIG",
            "{origin}: {name} has no `__` between section and key, so tierflow ignores it"
        );
        count += 1;
    }
    Ok(count)
}

#[test]
fn every_variable_and_config_file_is_accepted_by_the_config_loader() -> Result<()> {
    let rules = deploy("rules.toml");
    let compose_env = compose_tierflow_environment()?;
    ensure!(check_variable_names("compose", &compose_env)? >= 4);
    let output = config_check(None, &rules, &compose_env)?;
    ensure!(
        output.status.success(),
        "compose's environment is refused:\n{}",
        stderr(&output)
    );

    // Kubernetes: the ConfigMap's files, as mounted, plus the container's environment.
    let objects = kubernetes_objects()?;
    let container = tierflow_container(&objects)?;
    let k8s_env = kubernetes_environment(&container)?;
    check_variable_names("kubernetes", &k8s_env)?;
    let dir = tempfile::tempdir()?;
    let config_file = dir.path().join("tierflow.toml");
    let rules_file = dir.path().join("rules.toml");
    let config_text = configmap_file(&objects, "tierflow.toml")?;
    std::fs::write(&config_file, &config_text)?;
    std::fs::write(&rules_file, configmap_file(&objects, "rules.toml")?)?;
    let output = config_check(Some(&config_file), &rules_file, &k8s_env)?;
    ensure!(
        output.status.success(),
        "the ConfigMap's tierflow.toml with the Deployment's environment is refused:\n{}",
        stderr(&output)
    );

    // The same checks refuse a misspelt key, in the environment and in the file.
    let mut misspelt = compose_env.clone();
    misspelt.push(("TIERFLOW_PIPELINE__GROUP".into(), "tierflow".into()));
    let output = config_check(None, &rules, &misspelt)?;
    ensure!(
        !output.status.success() && stderr(&output).contains("`group`"),
        "a misspelt variable was accepted: {}\n{}",
        output.status,
        stderr(&output)
    );
    let misspelt_text = config_text.replacen("listen =", "listn =", 1);
    ensure!(
        misspelt_text != config_text,
        "the ConfigMap sets no http.listen"
    );
    std::fs::write(&config_file, misspelt_text)?;
    let output = config_check(Some(&config_file), &rules_file, &k8s_env)?;
    ensure!(
        !output.status.success() && stderr(&output).contains("listn"),
        "a misspelt key in the file was accepted: {}\n{}",
        output.status,
        stderr(&output)
    );
    Ok(())
}

/// One case of `unknown_metrics`: (expression, names it must report).
fn check_unknown(expr: &str, expected: &[&str]) {
    assert_eq!(unknown_metrics(expr), expected, "{expr}");
}

#[test]
fn the_metric_name_check_tells_exported_series_from_others() {
    check_unknown(
        "sum by (topic) (rate(tierflow_events_in_total[5m])) / tierflow_stage_seconds_count",
        &[],
    );
    check_unknown(
        "histogram_quantile(0.99, sum by (le) (rate(tierflow_redis_seconds_bucket[1m])))",
        &[],
    );
    check_unknown("label_values(tierflow_model_info, instance)", &[]);
    // A typo, a histogram by its bare name, histogram suffixes on a gauge, an unknown prefix.
    check_unknown(
        "rate(tierflow_event_in_total[1m]) + tierflow_stage_seconds + tierflow_consumer_lag_bucket",
        &[
            "tierflow_event_in_total",
            "tierflow_stage_seconds",
            "tierflow_consumer_lag_bucket",
        ],
    );
    // Only whole identifiers count.
    check_unknown("my_tierflow_thing + up{job=\"tierflow\"}", &[]);
}

#[test]
fn dashboards_alerts_and_the_autoscaler_name_only_exported_metrics() -> Result<()> {
    // Grafana: every query, and every panel has one.
    let dashboard = dashboard()?;
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    ensure!(queries.len() >= 30, "only {} queries", queries.len());
    let mut used = BTreeSet::new();
    for query in &queries {
        let unknown = unknown_metrics(query);
        ensure!(
            unknown.is_empty(),
            "dashboard query `{query}` names {unknown:?}, which tierflow does not export"
        );
        used.extend(
            metric_names(query)
                .iter()
                .filter_map(|n| exported_metric(n)),
        );
    }
    let panels = dashboard["panels"].as_array().context("no panels")?;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let mut panel_queries = Vec::new();
        dashboard_queries(&panel["targets"], &mut panel_queries);
        ensure!(
            panel_queries.iter().any(|q| !metric_names(q).is_empty()),
            "panel {:?} queries no tierflow metric",
            panel["title"]
        );
    }
    for wanted in [
        telemetry::EVENTS_IN,
        telemetry::RECORDS_OUT,
        telemetry::STAGE_SECONDS,
        telemetry::EVENT_TO_OUTPUT_SECONDS,
        telemetry::CONSUMER_LAG,
        telemetry::DEAD_LETTERS,
        telemetry::TIER_USERS,
        telemetry::TIER_CHANGES,
        telemetry::CAMPAIGN_DECISIONS,
        telemetry::REDIS_SECONDS,
        telemetry::LEASE_TAKEOVERS,
        telemetry::STALLED,
        telemetry::ASSIGNED_PARTITIONS,
    ] {
        ensure!(
            used.contains(wanted),
            "the dashboard does not show {wanted}"
        );
    }

    // The dashboard's datasource is the provisioned one, and Grafana loads it from where
    // compose mounts it.
    let datasources = yaml(&deploy("grafana/provisioning/datasources/prometheus.yaml"))?;
    let uid = text_at(&datasources, "datasources.0.uid")?;
    for panel in panels {
        let panel_uid = panel["datasource"]["uid"].as_str();
        ensure!(
            panel["type"] == "row" || panel_uid == Some(uid),
            "panel {:?} uses datasource {panel_uid:?}, not the provisioned {uid:?}",
            panel["title"]
        );
    }
    let providers = yaml(&deploy("grafana/provisioning/dashboards/tierflow.yaml"))?;
    let dashboards_dir = text_at(&providers, "providers.0.options.path")?;
    let compose = compose()?;
    let grafana_mounts = bind_mounts(compose_service(&compose, "grafana")?)?;
    ensure!(
        grafana_mounts.get(dashboards_dir) == Some(&deploy("compose/../grafana/dashboards")),
        "Grafana reads dashboards from {dashboards_dir}, compose mounts {grafana_mounts:?}"
    );

    // Prometheus alert rules.
    let alerts = yaml(&deploy("prometheus/alerts.yml"))?;
    let mut rules = 0;
    for group in seq_at(&alerts, "groups")? {
        for rule in seq_at(group, "rules")? {
            let name = text_at(rule, "alert")?;
            let expr = text_at(rule, "expr")?;
            let unknown = unknown_metrics(expr);
            ensure!(
                unknown.is_empty(),
                "alert {name}: `{expr}` names {unknown:?}"
            );
            ensure!(
                !metric_names(expr).is_empty() || expr.contains("job=\"tierflow\""),
                "alert {name} is about nothing tierflow exports: `{expr}`"
            );
            rules += 1;
        }
    }
    ensure!(rules >= 8, "only {rules} alert rules");

    // The autoscaler's metric, as prometheus-adapter serves it.
    let objects = kubernetes_objects()?;
    let hpa = only(&objects, "HorizontalPodAutoscaler")?;
    let metric = text_at(hpa, "spec.metrics.0.pods.metric.name")?;
    ensure!(
        exported_metric(metric) == Some(telemetry::CONSUMER_LAG),
        "the autoscaler scales on {metric}, not {}",
        telemetry::CONSUMER_LAG
    );
    let adapter = yaml(&deploy("k8s/prometheus-adapter-values.yaml"))?;
    let rule = at(&adapter, "rules.custom.0")?;
    ensure!(text_at(rule, "name.as")? == metric);
    for key in ["seriesQuery", "metricsQuery"] {
        let query = text_at(rule, key)?;
        ensure!(
            unknown_metrics(query).is_empty() && metric_names(query) == [metric],
            "prometheus-adapter {key} `{query}`"
        );
    }
    Ok(())
}

/// Bind mounts `HOST:CONTAINER[:ro]` of a compose service: container path → host path
/// (resolved against deploy/compose/). Named volumes are left out.
fn bind_mounts(service: &Yaml) -> Result<BTreeMap<String, PathBuf>> {
    let mut mounts = BTreeMap::new();
    for volume in seq_at(service, "volumes")? {
        let spec = volume.as_str().context("short volume syntax")?;
        let mut parts = spec.split(':');
        let (Some(host), Some(container)) = (parts.next(), parts.next()) else {
            bail!("volume {spec:?}");
        };
        if host.starts_with('.') || host.starts_with('/') {
            mounts.insert(container.to_owned(), deploy("compose").join(host));
        }
    }
    Ok(mounts)
}

#[test]
fn compose_creates_the_configured_topics_and_wires_the_services() -> Result<()> {
    // The configured topics: [topics] of deploy/tierflow.toml (every key with its default),
    // with any TIERFLOW_TOPICS__ override compose gives tierflow.
    let defaults = documented_defaults()?;
    let topics = defaults
        .get("topics")
        .and_then(toml::Value::as_table)
        .context("no [topics]")?;
    let compose = compose()?;
    let tierflow_env: BTreeMap<String, String> =
        compose_tierflow_environment()?.into_iter().collect();
    let configured = |role: &str, value: &toml::Value| -> Option<String> {
        let name = format!("TIERFLOW_TOPICS__{}", role.to_uppercase());
        tierflow_env
            .get(&name)
            .cloned()
            .or_else(|| value.as_str().map(str::to_owned))
    };
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for (role, value) in topics.iter().filter(|(_, v)| v.is_str()) {
        expected.insert(role.clone(), configured(role, value).unwrap_or_default());
    }
    let partitions = match tierflow_env.get("TIERFLOW_TOPICS__PARTITIONS") {
        Some(p) => p.parse()?,
        None => topics
            .get("partitions")
            .and_then(toml::Value::as_integer)
            .context("no topics.partitions")?,
    };
    // The code's topic list agrees: every topic it creates is configured, compaction included.
    let specs = TopicsConfig::default().specs();
    let documented: BTreeSet<&String> = expected.values().collect();
    for spec in &specs {
        ensure!(
            documented.contains(&spec.name),
            "tierflow creates {} but deploy/tierflow.toml does not name it",
            spec.name
        );
    }
    let compacted_roles: BTreeSet<&str> = expected
        .iter()
        .filter(|(_, name)| specs.iter().any(|s| &s.name == *name && s.compacted))
        .map(|(role, _)| role.as_str())
        .collect();
    ensure!(compacted_roles == BTreeSet::from(["user_score"]));

    let creator = compose_service(&compose, "topics")?;
    let env: BTreeMap<String, String> = compose_environment(at(creator, "environment")?)?
        .into_iter()
        .collect();
    let words = |key: &str| -> BTreeSet<String> {
        env.get(key)
            .map(|v| v.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let (plain, compacted) = (words("TOPICS"), words("COMPACTED_TOPICS"));
    let created: BTreeSet<String> = plain.union(&compacted).cloned().collect();
    let wanted: BTreeSet<String> = expected.values().cloned().collect();
    ensure!(
        created == wanted,
        "compose creates {created:?}; the configured topics are {wanted:?}"
    );
    let wanted_compacted: BTreeSet<String> = compacted_roles
        .iter()
        .map(|role| expected[*role].clone())
        .collect();
    ensure!(
        compacted == wanted_compacted,
        "compose compacts {compacted:?}, tierflow compacts {wanted_compacted:?}"
    );
    ensure!(
        env.get("PARTITIONS") == Some(&partitions.to_string()),
        "compose creates {:?} partitions, the config says {partitions}",
        env.get("PARTITIONS")
    );
    let script = seq_at(creator, "command")?
        .iter()
        .filter_map(Yaml::as_str)
        .collect::<Vec<_>>()
        .join("\n");
    for needle in [
        "kafka-topics.sh",
        "--if-not-exists",
        "$$TOPICS",
        "$$COMPACTED_TOPICS",
        "--config cleanup.policy=compact",
        "$$PARTITIONS",
    ] {
        ensure!(
            script.contains(needle),
            "the topic script lacks {needle:?}:\n{script}"
        );
    }
    let image = text_at(creator, "image")?;
    ensure!(
        image.starts_with("apache/kafka:") && image == text_at(&compose, "services.kafka.image")?
    );
    ensure!(
        text_at(&compose, "services.kafka.environment.KAFKA_PROCESS_ROLES")? == "broker,controller",
        "the broker is not a KRaft combined node"
    );

    // tierflow: replicas of one group, started after the topics exist.
    let tierflow = compose_service(&compose, "tierflow")?;
    ensure!(text_at(tierflow, "depends_on.topics.condition")? == "service_completed_successfully");
    let replicas = int_at(tierflow, "deploy.replicas")?;
    ensure!(
        (2..=partitions).contains(&replicas),
        "{replicas} replicas for {partitions} partitions"
    );
    let brokers = &tierflow_env["TIERFLOW_KAFKA__BROKERS"];
    let (broker_host, _) = brokers.split_once(':').context("brokers")?;
    compose_service(&compose, broker_host)?;
    ensure!(
        text_at(
            &compose,
            "services.kafka.environment.KAFKA_ADVERTISED_LISTENERS"
        )?
        .contains(&format!("//{brokers}")),
        "tierflow's brokers {brokers} are not an advertised listener"
    );
    let redis_url = &tierflow_env["TIERFLOW_REDIS__URL"];
    ensure!(redis_url.starts_with("redis://redis:"), "{redis_url}");
    let listen = &tierflow_env["TIERFLOW_HTTP__LISTEN"];
    ensure!(
        listen.starts_with("0.0.0.0:"),
        "tierflow listens on {listen}: unreachable from Prometheus"
    );

    // Every bind mount exists; the rules file tierflow is told about is mounted.
    for service in ["tierflow", "prometheus", "grafana"] {
        for (target, host) in bind_mounts(compose_service(&compose, service)?)? {
            ensure!(
                host.exists(),
                "{service} mounts {} at {target}: missing",
                host.display()
            );
        }
    }
    let mounts = bind_mounts(tierflow)?;
    let rules = &tierflow_env["TIERFLOW_CAMPAIGNS__RULES"];
    ensure!(
        mounts.get(rules) == Some(&deploy("compose/../rules.toml")),
        "campaigns.rules {rules} is not deploy/rules.toml mounted"
    );

    // Prometheus scrapes every replica on the metrics port and loads the mounted alerts.
    let prometheus = yaml(&deploy("prometheus/prometheus.yml"))?;
    let jobs = seq_at(&prometheus, "scrape_configs")?;
    let job = jobs
        .iter()
        .find(|j| text_at(j, "job_name").ok() == Some("tierflow"))
        .context("no scrape job `tierflow`")?;
    ensure!(text_at(job, "dns_sd_configs.0.names.0")? == "tierflow");
    ensure!(int_at(job, "dns_sd_configs.0.port")? == i64::from(port_of(listen)?));
    let mounted = bind_mounts(compose_service(&compose, "prometheus")?)?;
    for rule_file in seq_at(&prometheus, "rule_files")? {
        let rule_file = rule_file.as_str().context("rule file")?;
        ensure!(
            mounted.get(rule_file) == Some(&deploy("compose/../prometheus/alerts.yml")),
            "rule file {rule_file} is not deploy/prometheus/alerts.yml mounted"
        );
    }
    let datasources = yaml(&deploy("grafana/provisioning/datasources/prometheus.yaml"))?;
    ensure!(text_at(&datasources, "datasources.0.url")? == "http://prometheus:9090");
    Ok(())
}

#[test]
fn kubernetes_probes_ports_and_bounds_agree_with_the_config() -> Result<()> {
    let objects = kubernetes_objects()?;
    let config = configmap_config(&objects)?;
    let deployment = kubernetes_object(&objects, "Deployment", "tierflow")?;
    let container = tierflow_container(&objects)?;

    // Ports: the container port is http.listen's, reachable from outside the pod.
    let listen = config_value(&config, "http", "listen")?;
    let listen = listen.as_str().context("http.listen")?;
    ensure!(
        listen.starts_with("0.0.0.0:"),
        "http.listen = {listen}: probes cannot reach it"
    );
    let port = i64::from(port_of(listen)?);
    let ports = seq_at(&container, "ports")?;
    ensure!(ports.len() == 1);
    ensure!(int_at(&ports[0], "containerPort")? == port);
    let port_name = text_at(&ports[0], "name")?;
    let names_the_port =
        |value: &Yaml| value.as_str() == Some(port_name) || value.as_i64() == Some(port);
    for (probe, path) in [
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
    ] {
        ensure!(
            text_at(&container, &format!("{probe}.httpGet.path"))? == path,
            "{probe} is not on {path}"
        );
        ensure!(
            names_the_port(at(&container, &format!("{probe}.httpGet.port"))?),
            "{probe} is not on the metrics port"
        );
    }
    let annotations = at(&deployment, "spec.template.metadata.annotations")?;
    ensure!(text_field(annotations, "prometheus.io/port")? == port.to_string());
    ensure!(text_field(annotations, "prometheus.io/path")? == "/metrics");
    let service = only(&objects, "Service")?;
    let service_ports = seq_at(service, "spec.ports")?;
    ensure!(names_the_port(at(&service_ports[0], "targetPort")?));
    ensure!(int_at(&service_ports[0], "port")? == port);

    // Selectors pick the Deployment's pods.
    let pod_labels = at(&deployment, "spec.template.metadata.labels")?
        .as_mapping()
        .context("pod labels")?;
    let selects_pods = |selector: &Yaml| -> bool {
        selector
            .as_mapping()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| pod_labels.get(k) == Some(v)))
    };
    ensure!(selects_pods(at(&deployment, "spec.selector.matchLabels")?));
    ensure!(selects_pods(at(service, "spec.selector")?));
    let pdb = only(&objects, "PodDisruptionBudget")?;
    ensure!(selects_pods(at(pdb, "spec.selector.matchLabels")?));
    ensure!(int_at(pdb, "spec.maxUnavailable")? == 1);

    // Replicas: the autoscaler stays within the clickstream's partitions.
    let partitions = config_value(&config, "topics", "partitions")?
        .as_integer()
        .context("topics.partitions")?;
    let hpa = only(&objects, "HorizontalPodAutoscaler")?;
    ensure!(text_at(hpa, "spec.scaleTargetRef.kind")? == "Deployment");
    ensure!(text_at(hpa, "spec.scaleTargetRef.name")? == "tierflow");
    let (min, max) = (
        int_at(hpa, "spec.minReplicas")?,
        int_at(hpa, "spec.maxReplicas")?,
    );
    let replicas = int_at(&deployment, "spec.replicas")?;
    ensure!(
        1 <= min && min <= replicas && replicas <= max && max <= partitions,
        "replicas {replicas}, autoscaler {min}..={max}, {partitions} partitions"
    );

    // Shutdown: the kubelet waits longer than tierflow's drain (bounded by max_stall_secs).
    let max_stall = config_value(&config, "pipeline", "max_stall_secs")?
        .as_integer()
        .context("pipeline.max_stall_secs")?;
    let grace = int_at(
        &deployment,
        "spec.template.spec.terminationGracePeriodSeconds",
    )?;
    ensure!(
        grace >= max_stall + 30,
        "terminationGracePeriodSeconds {grace} leaves no margin over max_stall_secs {max_stall}"
    );

    // Files: the config file in the arguments and the rules file are the ConfigMap's keys
    // under its mount, mounted as a directory (updates reach the pods; rules hot-reload).
    let mounts = seq_at(&container, "volumeMounts")?;
    ensure!(mounts.len() == 1);
    ensure!(
        at(&mounts[0], "subPath").is_err(),
        "a subPath mount never sees ConfigMap updates"
    );
    let mount_path = text_at(&mounts[0], "mountPath")?;
    let volumes = seq_at(&deployment, "spec.template.spec.volumes")?;
    ensure!(text_at(&volumes[0], "name")? == text_at(&mounts[0], "name")?);
    ensure!(text_at(&volumes[0], "configMap.name")? == "tierflow-config");
    let args: Vec<&str> = seq_at(&container, "args")?
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    ensure!(args.first() == Some(&"run"), "args {args:?}");
    let config_arg = args
        .iter()
        .position(|a| *a == "--config")
        .and_then(|i| args.get(i + 1))
        .context("no --config argument")?;
    ensure!(*config_arg == format!("{mount_path}/tierflow.toml"));
    let rules = config_value(&config, "campaigns", "rules")?;
    ensure!(rules.as_str() == Some(format!("{mount_path}/rules.toml").as_str()));
    ensure!(
        configmap_file(&objects, "rules.toml")? == read(&deploy("rules.toml"))?,
        "the ConfigMap's rules.toml differs from deploy/rules.toml: copy it over"
    );
    Ok(())
}

#[test]
fn the_image_is_built_locked_and_runs_as_non_root() -> Result<()> {
    let dockerfile = read(&deploy("Dockerfile"))?;
    let instructions: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let stages: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("FROM "))
        .map(|(i, _)| i)
        .collect();
    ensure!(stages.len() >= 2, "not a multi-stage build");
    ensure!(dockerfile.contains("cargo build --release -p tierflow --locked"));
    ensure!(dockerfile.contains("--mount=type=cache"));
    let runtime = &instructions[*stages.last().unwrap_or(&0)..];
    let user = runtime
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .context("the runtime stage sets no USER")?;
    ensure!(
        !matches!(user.split(':').next(), Some("root" | "0")),
        "runs as {user}"
    );
    ensure!(
        runtime
            .iter()
            .any(|l| l.starts_with("ENTRYPOINT") && l.contains("tierflow")),
        "the entrypoint is not tierflow"
    );
    // The image's port is the one Kubernetes and compose expect.
    let objects = kubernetes_objects()?;
    let port = int_at(
        &seq_at(&tierflow_container(&objects)?, "ports")?[0],
        "containerPort",
    )?;
    ensure!(runtime.contains(&format!("EXPOSE {port}").as_str()));

    // The build context: no target/ or .git, but everything the build reads.
    let ignore = read(&deploy("../.dockerignore"))?;
    let lines: BTreeSet<&str> = ignore.lines().map(str::trim).collect();
    for excluded in ["target", ".git"] {
        ensure!(lines.contains(excluded), ".dockerignore keeps {excluded}");
    }
    // The demo embeds deploy/rules.toml.
    ensure!(!lines.contains("deploy") || lines.contains("!deploy/rules.toml"));
    for needed in ["crates", "Cargo.toml", "Cargo.lock", "schemas"] {
        ensure!(!lines.contains(needed), ".dockerignore drops {needed}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// tierflow starts as deployed

#[test]
fn tierflow_run_starts_as_deployed_and_stops_cleanly_on_sigterm() -> Result<()> {
    let objects = kubernetes_objects()?;
    let deployment = kubernetes_object(&objects, "Deployment", "tierflow")?;
    let container = tierflow_container(&objects)?;
    let mount_path = text_at(&container, "volumeMounts.0.mountPath")?;

    // The ConfigMap's files as the pod sees them, with the mount path moved here.
    let dir = tempfile::tempdir()?;
    let here = dir.path().to_str().context("temporary path")?;
    for key in ["tierflow.toml", "rules.toml"] {
        let text = configmap_file(&objects, key)?.replace(mount_path, here);
        std::fs::write(dir.path().join(key), text)?;
    }
    let args: Vec<String> = seq_at(&container, "args")?
        .iter()
        .filter_map(Yaml::as_str)
        .map(|a| a.replace(mount_path, here))
        .collect();

    // The Deployment's environment, plus what points this run at the test's own services:
    // broker, Redis, fresh topics, group and key prefix, and a free loopback port.
    let mut env = kubernetes_environment(&container)?;
    let defaults = documented_defaults()?;
    let roles = defaults
        .get("topics")
        .and_then(toml::Value::as_table)
        .context("no [topics]")?
        .iter()
        .filter(|(_, v)| v.is_str())
        .map(|(role, _)| role.clone());
    for role in roles {
        env.push((
            format!("TIERFLOW_TOPICS__{}", role.to_uppercase()),
            unique_name(&role),
        ));
    }
    env.extend([
        (
            "TIERFLOW_KAFKA__BROKERS".to_owned(),
            broker().bootstrap_servers(),
        ),
        ("TIERFLOW_REDIS__URL".to_owned(), redis().url()),
        (
            "TIERFLOW_REDIS__KEY_PREFIX".to_owned(),
            unique_name("deploy"),
        ),
        (
            "TIERFLOW_PIPELINE__GROUP_ID".to_owned(),
            unique_name("deploy"),
        ),
        ("TIERFLOW_HTTP__LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
    ]);
    let log = dir.path().join("run.log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_tierflow"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TIERFLOW_") {
            command.env_remove(name);
        }
    }
    let child = command
        .args(&args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting tierflow run")?;
    let mut running = Running { child, log };

    // Ready: joined the group (on topics it created), no stage stalled.
    let port = running.wait_for("/readyz 200", Duration::from_secs(120), |run| {
        let port = run.logged_port()?;
        matches!(http_get(port, "/readyz"), Ok((200, _))).then_some(port)
    })?;
    ensure!(http_get(port, "/healthz")?.0 == 200);
    let partitions = config_value(&configmap_config(&objects)?, "topics", "partitions")?
        .as_integer()
        .context("topics.partitions")?;
    let expected = format!("{} {partitions}", telemetry::ASSIGNED_PARTITIONS);
    running.wait_for(
        "every clickstream partition assigned",
        Duration::from_secs(30),
        |_| match http_get(port, "/metrics") {
            Ok((200, body)) if body.lines().any(|l| l == expected) => Some(()),
            _ => None,
        },
    )?;

    // It works as deployed: a generated stream on its clickstream is consumed and scored.
    let produced = 500;
    let mut generate = Command::new(env!("CARGO_BIN_EXE_tierflow"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TIERFLOW_") {
            generate.env_remove(name);
        }
    }
    let output = generate
        .args([
            "generate", "--users", "20", "--days", "7", "--topic", "--limit",
        ])
        .arg(produced.to_string())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()?;
    ensure!(
        output.status.success(),
        "generate failed:\n{}",
        stderr(&output)
    );
    let metrics = running.wait_for(
        "the generated records consumed and scored",
        Duration::from_secs(60),
        |_| match http_get(port, "/metrics") {
            Ok((200, body))
                if metric_sum(&body, telemetry::EVENTS_IN) == f64::from(produced)
                    && metric_sum(&body, telemetry::SCORED) > 0.0
                    && metric_sum(&body, telemetry::RECORDS_OUT) > 0.0 =>
            {
                Some(body)
            }
            _ => None,
        },
    )?;
    let series: String = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let unknown = unknown_metrics(&series);
    ensure!(
        unknown.is_empty(),
        "/metrics has series outside telemetry::ALL: {unknown:?}"
    );

    // SIGTERM: drain, commit, leave the group, exit 0 within the pod's grace period.
    let status = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()?;
    ensure!(status.success(), "kill -TERM failed");
    let grace = int_at(
        &deployment,
        "spec.template.spec.terminationGracePeriodSeconds",
    )?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = running.child.try_wait()? {
            break status;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(grace.unsigned_abs()),
            "still running {grace} s after SIGTERM:\n{}",
            running.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure!(
        status.success(),
        "exit {status} after SIGTERM:\n{}",
        running.log_tail()
    );
    ensure!(
        running.log().contains("stopped cleanly"),
        "no clean stop logged:\n{}",
        running.log_tail()
    );
    Ok(())
}
