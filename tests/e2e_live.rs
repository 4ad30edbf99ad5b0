//! The live view end to end: `tierflow demo --listen 127.0.0.1:0 --hold` serves the page
//! while a small demo runs; once the demo's summary is printed, `/api/live` must count
//! exactly the tier changes and triggers the demo published (read back from the topics), and
//! headless Chromium (Debian's `chromium`, or `$TIERFLOW_CHROMIUM`) must render the charts,
//! the tier flow numbers, the triggers per campaign and, for `/?user=ID`, the user's windows
//! and scores. Screenshots are kept under `target/test-artifacts/`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

/// Checks `condition` every 200 ms until it gives a value or `limit` passes.
fn poll<T>(
    what: &str,
    limit: Duration,
    mut condition: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = condition()? {
            return Ok(value);
        }
        ensure!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One HTTP/1.1 GET: status code and body.
fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line in {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn get_json(addr: SocketAddr, path: &str) -> Result<Value> {
    let (status, body) = get(addr, path)?;
    ensure!(status == 200, "GET {path}: {status} {body}");
    Ok(serde_json::from_str(&body)?)
}

/// Debian's chromium on PATH, or `$TIERFLOW_CHROMIUM`.
fn chromium() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("TIERFLOW_CHROMIUM") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|candidate| candidate.is_file())
        .context(
            "headless Chromium is needed for this test and `chromium` is not on PATH: run \
             `bash tests/run.sh` (it installs Debian's chromium package) or set \
             TIERFLOW_CHROMIUM",
        )
}

/// Runs headless Chromium with `args` then `url`, killed after two minutes; its stdout.
fn browse(browser: &Path, profile: &Path, args: &[&str], url: &str) -> Result<String> {
    let out = tempfile::NamedTempFile::new()?;
    let err = tempfile::NamedTempFile::new()?;
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(out.reopen()?)
        .stderr(err.reopen()?)
        .spawn()
        .with_context(|| format!("starting {}", browser.display()))?;
    let status = match poll("chromium to exit", Duration::from_secs(120), || {
        Ok(child.try_wait()?)
    }) {
        Ok(status) => status,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    ensure!(
        status.success(),
        "chromium {args:?} {url} failed with {status}:\n{}",
        std::fs::read_to_string(err.path())?
    );
    Ok(std::fs::read_to_string(out.path())?)
}

/// The demo, its stdout collected line by line by a thread.
struct Demo {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: tempfile::NamedTempFile,
}

impl Demo {
    fn start(args: &[&str]) -> Result<Self> {
        let stderr = tempfile::NamedTempFile::new()?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_tierflow"))
            .args(args)
            .env_remove("TIERFLOW_CONFIG")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr.reopen()?)
            .spawn()
            .context("starting tierflow demo")?;
        let stdout = Arc::new(Mutex::new(String::new()));
        let lines = BufReader::new(child.stdout.take().context("piped stdout")?);
        let sink = Arc::clone(&stdout);
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Ok(Self {
            child,
            stdout,
            stderr,
        })
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Fails with the output when the demo has exited.
    fn still_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the demo exited with {status}:\n{}\n{}",
                self.stdout(),
                std::fs::read_to_string(self.stderr.path())?
            );
        }
        Ok(())
    }

    /// The number after `prefix` on the first line starting with it.
    fn count(&self, prefix: &str) -> Result<u64> {
        let stdout = self.stdout();
        let line = stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .with_context(|| format!("no line starting {prefix:?}:\n{stdout}"))?;
        Ok(line[prefix.len()..]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .parse()?)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn artifacts() -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&dir)?;
    Ok(dir.canonicalize()?)
}

/// A PNG of a real page: the signature and more than a blank page's bytes.
fn check_png(path: &Path) -> Result<()> {
    let bytes =
        std::fs::read(path).with_context(|| format!("no screenshot at {}", path.display()))?;
    ensure!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    ensure!(
        bytes.len() > 20_000,
        "{} is only {} bytes",
        path.display(),
        bytes.len()
    );
    Ok(())
}

/// `1234` as the page prints integers (`1,234`).
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The value of attribute `name` on the element that carries `marker` (e.g. `id="x"`).
fn attribute<'a>(dom: &'a str, marker: &str, name: &str) -> Option<&'a str> {
    let at = dom.find(marker)?;
    let tag_start = dom[..at].rfind('<')?;
    let tag_end = at + dom[at..].find('>')?;
    let tag = &dom[tag_start..tag_end];
    let key = format!(" {name}=\"");
    let from = tag.find(&key)? + key.len();
    let len = tag[from..].find('"')?;
    Some(&tag[from..from + len])
}

/// The `<path>` of series `name` inside the SVG with id `chart`: its points and maximum.
fn chart_series(dom: &str, chart: &str, name: &str) -> Result<(u64, f64)> {
    let start = dom
        .find(&format!("id=\"{chart}\""))
        .with_context(|| format!("no #{chart} in the page"))?;
    let end = start + dom[start..].find("</svg>").context("unclosed svg")?;
    let svg = &dom[start..end];
    let marker = format!("data-series=\"{name}\"");
    let points = attribute(svg, &marker, "data-points")
        .with_context(|| format!("#{chart} has no drawn {name} line:\n{svg}"))?
        .parse()?;
    let max = attribute(svg, &marker, "data-max")
        .context("data-max")?
        .parse()?;
    Ok((points, max))
}

#[test]
fn the_live_view_shows_the_demo_in_a_browser() -> Result<()> {
    let browser = chromium()?;
    let mut demo = Demo::start(&[
        "demo",
        "--users",
        "150",
        "--days",
        "14",
        "--rate",
        "3000",
        "--listen",
        "127.0.0.1:0",
        "--hold",
    ])?;
    let addr: SocketAddr = poll("the live view's address", Duration::from_secs(90), || {
        demo.still_running()?;
        let stdout = demo.stdout();
        Ok(stdout
            .lines()
            .find_map(|l| l.strip_prefix("live view: http://"))
            .map(|a| a.trim_end_matches('/').parse())
            .transpose()?)
    })?;
    let base = format!("http://{addr}/");
    eprintln!("live view at {base}");

    // While the demo runs the page is up and the API answers.
    let (status, page) = get(addr, "/")?;
    ensure!(status == 200 && page.contains("live.js"), "GET /: {status}");

    // Wait for the demo's summary (it keeps serving afterwards: --hold).
    poll("the demo to finish", Duration::from_secs(300), || {
        demo.still_running()?;
        Ok(demo.stdout().contains("holding:").then_some(()))
    })?;
    let published = demo.count("== tier changes: ")?;
    let stdout = demo.stdout();
    let triggers_line = stdout
        .lines()
        .find(|l| l.starts_with("== campaign triggers: "))
        .context("no trigger line")?;
    let numbers: Vec<u64> = triggers_line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let (sent, held) = (numbers[0], numbers[1]);
    ensure!(
        published > 0 && sent > 0,
        "a demo without tier changes or triggers:\n{stdout}"
    );

    // The view reads the topics from their beginning: it must count exactly what the demo
    // published, and have sampled the metrics for a few seconds.
    let live = poll("/api/live to catch up", Duration::from_secs(60), || {
        let live = get_json(addr, "/api/live")?;
        let records = &live["records"];
        let done = records["tier_changed"] == published
            && records["campaign_triggered"] == sent
            && records["campaign_control"] == held
            && live["series"]["t_ms"].as_array().map_or(0, Vec::len) >= 3;
        Ok(done.then_some(live))
    })?;
    let duplicates = live["records"]["duplicates"].as_u64().unwrap_or(0);
    let flows = live["flow"].as_array().context("flow")?;
    let flow_total: u64 = flows.iter().map(|f| f["users"].as_u64().unwrap()).sum();
    ensure!(
        flow_total + duplicates >= published && flow_total <= published,
        "flow {flow_total} vs {published} published ({duplicates} duplicates)"
    );
    let series = &live["series"];
    let peak_rate = series["events_per_sec"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .fold(0.0, f64::max);
    ensure!(peak_rate > 0.0, "no events/s sampled: {series}");
    ensure!(
        series["batch_p50_ms"]
            .as_array()
            .unwrap()
            .iter()
            .any(Value::is_number),
        "no batch latency sampled: {series}"
    );
    let campaigns = live["campaigns"].as_array().context("campaigns")?;
    let sent_total: u64 = campaigns.iter().map(|c| c["sent"].as_u64().unwrap()).sum();
    ensure!(
        sent_total <= sent && sent_total + duplicates >= sent,
        "sent {sent_total} vs {sent}"
    );
    let user = live["latest_tier_changes"][0]["user_id"]
        .as_str()
        .context("no latest tier change")?
        .to_owned();

    // The page, rendered by a real browser.
    let profile = tempfile::tempdir()?;
    let dom = browse(
        &browser,
        profile.path(),
        &["--virtual-time-budget=5000", "--dump-dom"],
        &base,
    )?;
    ensure!(
        dom.contains("data-live=\"ok\""),
        "the page never rendered /api/live:\n{dom}"
    );
    let (points, max) = chart_series(&dom, "chart-throughput", "events_per_sec")?;
    ensure!(
        points >= 3 && max > 0.0,
        "throughput chart: {points} points, max {max}"
    );
    let (points, max) = chart_series(&dom, "chart-latency", "batch_p50_ms")?;
    ensure!(
        points >= 1 && max > 0.0,
        "latency chart: {points} points, max {max}"
    );
    chart_series(&dom, "chart-latency", "batch_p99_ms")?;
    ensure!(dom.contains("id=\"chart-lag\""), "no lag chart");
    ensure!(
        dom.contains("class=\"band\""),
        "no tier-flow bands in the Sankey chart"
    );
    for flow in flows {
        let from = match &flow["from"] {
            Value::Null => "new".to_owned(),
            t => t.to_string(),
        };
        let cell = format!(
            "data-from=\"{from}\" data-to=\"{}\" data-users=\"{}\">{}<",
            flow["to"],
            flow["users"],
            grouped(flow["users"].as_u64().unwrap())
        );
        ensure!(
            dom.contains(&cell),
            "tier flow cell {cell} missing from the page"
        );
    }
    for campaign in campaigns {
        let name = campaign["campaign"].as_str().unwrap();
        let row = format!(
            "<tr data-campaign=\"{name}\"><td>{name}</td><td class=\"num sent\">{}</td><td class=\"num held\">{}</td>",
            grouped(campaign["sent"].as_u64().unwrap()),
            grouped(campaign["held_out"].as_u64().unwrap())
        );
        ensure!(
            dom.contains(&row),
            "campaign row {row} missing from the page"
        );
    }
    ensure!(
        dom.contains(&format!("data-user=\"{user}\"")),
        "the latest tier changes do not list {user}"
    );

    let dir = artifacts()?;
    let dashboard_png = dir.join("live-dashboard.png");
    let user_png = dir.join("live-user.png");
    for png in [&dashboard_png, &user_png] {
        let _ = std::fs::remove_file(png);
    }
    browse(
        &browser,
        profile.path(),
        &[
            "--virtual-time-budget=5000",
            "--window-size=1400,1000",
            &format!("--screenshot={}", dashboard_png.display()),
        ],
        &base,
    )?;
    check_png(&dashboard_png)?;
    eprintln!("screenshot: {}", dashboard_png.display());

    // One user: /api/user/ID and the page's user view of it.
    let report = get_json(addr, &format!("/api/user/{user}"))?;
    ensure!(report["user_id"] == user.as_str(), "{report}");
    let (status, body) = get(addr, "/api/user/nobody-at-all")?;
    ensure!(
        status == 404 && body.contains("\"error\""),
        "{status} {body}"
    );
    let user_url = format!("{base}?user={user}");
    let dom = browse(
        &browser,
        profile.path(),
        &["--virtual-time-budget=5000", "--dump-dom"],
        &user_url,
    )?;
    ensure!(
        attribute(&dom, "id=\"user-view\"", "data-loaded") == Some("ok"),
        "the user view did not load:\n{dom}"
    );
    ensure!(dom.contains("id=\"user-windows\""), "no windows table");
    for window in report["windows"].as_array().context("windows")? {
        let horizon = window["horizon"].as_str().unwrap();
        ensure!(
            dom.contains(&format!("data-horizon=\"{horizon}\"")),
            "no {horizon} column in the windows table"
        );
    }
    ensure!(dom.contains("data-row=\"purchase\""), "no purchase row");
    let churn: f64 = attribute(&dom, "id=\"user-scores\"", "data-churn-risk")
        .context("no scores")?
        .parse()?;
    let expected = report["model"]["churn_risk"]
        .as_f64()
        .context("churn_risk")?;
    ensure!(
        (churn - expected).abs() < 1e-6,
        "churn {churn} vs {expected}"
    );
    ensure!(dom.contains("id=\"user-features\""), "no features");
    // The history tables appear exactly when the report has a history.
    let has_history = report.get("history").is_some_and(Value::is_array);
    ensure!(
        dom.contains("id=\"user-tier-history\"") == has_history
            && dom.contains("id=\"user-triggers\"") == has_history,
        "history tables vs history field ({has_history})"
    );
    browse(
        &browser,
        profile.path(),
        &[
            "--virtual-time-budget=5000",
            "--window-size=1400,1000",
            &format!("--screenshot={}", user_png.display()),
        ],
        &user_url,
    )?;
    check_png(&user_png)?;
    eprintln!("screenshot: {}", user_png.display());

    // --hold ends on SIGTERM, with exit 0.
    let status = Command::new("kill")
        .args(["-TERM", &demo.child.id().to_string()])
        .status()?;
    ensure!(status.success(), "kill -TERM failed");
    let status = poll(
        "the demo to exit after SIGTERM",
        Duration::from_secs(30),
        || Ok(demo.child.try_wait()?),
    )?;
    ensure!(
        status.success(),
        "exit {status} after SIGTERM:\n{}",
        std::fs::read_to_string(demo.stderr.path())?
    );
    Ok(())
}

#[test]
fn the_dashboard_refuses_a_stdout_that_is_not_a_terminal() -> Result<()> {
    for command in [&["demo", "--dashboard"][..], &["run", "--dashboard"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_tierflow"))
            .args(command)
            .env_remove("TIERFLOW_CONFIG")
            .stdin(Stdio::null())
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && stderr.contains("stdout is not one"),
            "{command:?}: {}\n{stderr}",
            out.status
        );
    }
    Ok(())
}
