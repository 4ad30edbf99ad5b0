//! `--dashboard`: the live feed in the terminal (ratatui on crossterm). Events per second as
//! a sparkline, lag and batch latency, users per tier, triggers per campaign, and the latest
//! tier changes and triggers. `q`, `Esc` or Ctrl-C asks the command to stop gracefully.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Result, bail};
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table};
use tierflow_events::CampaignArm;
use tokio::sync::watch;

use super::feed::{LiveFeed, Snapshot};

/// How often the screen is redrawn (and keys are looked at).
const REDRAW: Duration = Duration::from_millis(250);
const TIER_COLORS: [Color; 8] = [
    Color::Gray,
    Color::LightBlue,
    Color::LightGreen,
    Color::Yellow,
    Color::LightMagenta,
    Color::LightRed,
    Color::Cyan,
    Color::White,
];

/// `--dashboard` needs a terminal to draw on.
pub(crate) fn ensure_terminal() -> Result<()> {
    if !std::io::stdout().is_terminal() {
        bail!(
            "--dashboard draws on a terminal, but stdout is not one (redirected or piped); \
             run it in a terminal, or use the web page (http.listen / --listen) instead"
        );
    }
    Ok(())
}

/// Draws the dashboard until a key asks to quit (then sends `true` on `stop`) or `shutdown`
/// turns true. Blocking: run it on a blocking thread.
pub(crate) fn run(
    feed: &LiveFeed,
    title: &str,
    stop: &watch::Sender<bool>,
    shutdown: &watch::Receiver<bool>,
) -> Result<()> {
    let mut terminal = ratatui::try_init()?;
    let result = (|| -> Result<()> {
        loop {
            let snapshot = feed.snapshot();
            terminal.draw(|frame| render(frame, title, &snapshot))?;
            if event::poll(REDRAW)?
                && let Event::Key(key) = event::read()?
                && key.kind == KeyEventKind::Press
            {
                let ctrl_c =
                    key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
                if ctrl_c || matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) {
                    let _ = stop.send(true);
                    return Ok(());
                }
            }
            if *shutdown.borrow() {
                return Ok(());
            }
        }
    })();
    ratatui::restore();
    result
}

fn tier_style(tier: u8) -> Style {
    Style::default()
        .fg(TIER_COLORS[tier as usize % TIER_COLORS.len()])
        .add_modifier(Modifier::BOLD)
}

fn tier_text(tier: Option<u8>) -> Span<'static> {
    match tier {
        Some(t) => Span::styled(format!("tier {t}"), tier_style(t)),
        None => Span::styled("new", Style::default().fg(Color::DarkGray)),
    }
}

fn latency(ms: Option<f64>) -> String {
    match ms {
        None => "–".to_owned(),
        Some(v) if v >= 1000.0 => format!("{:.2} s", v / 1000.0),
        Some(v) if v >= 10.0 => format!("{v:.0} ms"),
        Some(v) => format!("{v:.1} ms"),
    }
}

fn clock(time: impl std::fmt::Display) -> String {
    let text = time.to_string();
    // RFC 3339: keep HH:MM:SS.
    text.get(11..19).map_or(text.clone(), str::to_owned)
}

/// One frame of the dashboard.
pub(crate) fn render(frame: &mut Frame<'_>, title: &str, s: &Snapshot) {
    let [head, top, middle, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(9),
        Constraint::Length((s.tiers.max(s.campaigns.len()).clamp(3, 10) + 2) as u16),
        Constraint::Min(5),
    ])
    .areas(frame.area());
    let header = Line::from(vec![
        Span::styled(" tierflow live ", Style::default().bold().fg(Color::Cyan)),
        Span::raw(format!("· {title} · {} ", s.status)),
        Span::styled("· q quits", Style::default().fg(Color::DarkGray)),
    ]);
    frame.render_widget(Paragraph::new(header), head);

    let [spark, stats] =
        Layout::horizontal([Constraint::Min(30), Constraint::Length(34)]).areas(top);
    render_throughput(frame, spark, s);
    render_stats(frame, stats, s);

    let [tiers, campaigns] =
        Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(middle);
    render_tiers(frame, tiers, s);
    render_campaigns(frame, campaigns, s);

    let [changes, triggers] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(bottom);
    render_changes(frame, changes, s);
    render_triggers(frame, triggers, s);
}

fn render_throughput(frame: &mut Frame<'_>, area: Rect, s: &Snapshot) {
    let now = s.current.map_or(0.0, |p| p.events_per_sec);
    // As many of the newest points as fit.
    let width = area.width.saturating_sub(2) as usize;
    let values = &s.series.events_per_sec;
    let data: Vec<u64> = values[values.len().saturating_sub(width)..]
        .iter()
        .map(|v| v.round() as u64)
        .collect();
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" events/s {now:.0} "));
    frame.render_widget(
        Sparkline::default()
            .block(block)
            .data(data)
            .style(Style::default().fg(Color::LightBlue)),
        area,
    );
}

fn render_stats(frame: &mut Frame<'_>, area: Rect, s: &Snapshot) {
    let p = s.current;
    let row = |name: &str, value: String| {
        Line::from(vec![
            Span::styled(format!("{name:<14}"), Style::default().fg(Color::DarkGray)),
            Span::styled(value, Style::default().bold()),
        ])
    };
    let sent: u64 = s.campaigns.iter().map(|c| c.counts.sent).sum();
    let held: u64 = s.campaigns.iter().map(|c| c.counts.held_out).sum();
    let changes: u64 = s.flow.iter().map(|f| f.users).sum();
    let lines = vec![
        row(
            "lag",
            p.and_then(|p| p.lag)
                .map_or("–".to_owned(), |l| format!("{l:.0}")),
        ),
        row("batch p50", latency(p.and_then(|p| p.batch_p50_ms))),
        row("batch p99", latency(p.and_then(|p| p.batch_p99_ms))),
        row(
            "outputs/s",
            format!("{:.0}", p.map_or(0.0, |p| p.outputs_per_sec)),
        ),
        row("events in", format!("{:.0}", s.totals.events_in)),
        row("tier changes", changes.to_string()),
        row("sent / held", format!("{sent} / {held}")),
    ];
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" now ")),
        area,
    );
}

fn render_tiers(frame: &mut Frame<'_>, area: Rect, s: &Snapshot) {
    let max = s
        .net_users
        .iter()
        .map(|v| v.unsigned_abs())
        .max()
        .unwrap_or(0)
        .max(1);
    let room = area.width.saturating_sub(2 + 8 + 9) as u64;
    let lines: Vec<Line<'_>> = s
        .net_users
        .iter()
        .enumerate()
        .map(|(t, n)| {
            let bar = "█".repeat((n.unsigned_abs() * room / max) as usize);
            // Negative: more users left the tier than entered it since the view started.
            let bar_style = if *n < 0 {
                Style::default().fg(Color::Red)
            } else {
                tier_style(t as u8)
            };
            Line::from(vec![
                Span::styled(format!("tier {t:<3}"), tier_style(t as u8)),
                Span::styled(format!("{n:>8} "), Style::default().bold()),
                Span::styled(bar, bar_style),
            ])
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" users per tier "),
        ),
        area,
    );
}

fn render_campaigns(frame: &mut Frame<'_>, area: Rect, s: &Snapshot) {
    let rows = s.campaigns.iter().map(|c| {
        Row::new(vec![
            Cell::from(c.campaign.clone()),
            Cell::from(c.counts.sent.to_string()),
            Cell::from(c.counts.held_out.to_string()),
            Cell::from(c.counts.outcomes_treated.to_string()),
            Cell::from(c.counts.outcomes_control.to_string()),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Min(16),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(9),
        ],
    )
    .header(
        Row::new(vec!["campaign", "sent", "held", "buys tr.", "buys ctl."])
            .style(Style::default().fg(Color::DarkGray)),
    )
    .block(
        Block::default()
            .borders(Borders::ALL)
            .title(" triggers per campaign "),
    );
    frame.render_widget(table, area);
}

fn render_changes(frame: &mut Frame<'_>, area: Rect, s: &Snapshot) {
    let rows = s.latest_tier_changes.iter().map(|c| {
        Row::new(vec![
            Cell::from(clock(c.processing_time)),
            Cell::from(c.user_id.clone()),
            Cell::from(Line::from(vec![
                tier_text(c.from_tier),
                Span::raw(" → "),
                tier_text(Some(c.to_tier)),
            ])),
            Cell::from(format!("{:.3}", c.churn_risk)),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Min(10),
            Constraint::Length(16),
            Constraint::Length(6),
        ],
    )
    .header(
        Row::new(vec!["time", "user", "move", "churn"]).style(Style::default().fg(Color::DarkGray)),
    )
    .block(
        Block::default()
            .borders(Borders::ALL)
            .title(" latest tier changes "),
    );
    frame.render_widget(table, area);
}

fn render_triggers(frame: &mut Frame<'_>, area: Rect, s: &Snapshot) {
    let rows = s.latest_triggers.iter().map(|t| {
        let arm = match t.arm {
            CampaignArm::Treated => Span::styled("sent", Style::default().fg(Color::LightBlue)),
            CampaignArm::Control => Span::styled("held", Style::default().fg(Color::DarkGray)),
        };
        Row::new(vec![
            Cell::from(clock(t.processing_time)),
            Cell::from(t.user_id.clone()),
            Cell::from(t.campaign.clone()),
            Cell::from(arm),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Min(10),
            Constraint::Min(14),
            Constraint::Length(4),
        ],
    )
    .header(
        Row::new(vec!["time", "user", "campaign", "arm"])
            .style(Style::default().fg(Color::DarkGray)),
    )
    .block(
        Block::default()
            .borders(Borders::ALL)
            .title(" latest triggers "),
    );
    frame.render_widget(table, area);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::feed::tests::{change, metrics_text, trigger};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use tierflow_events::EventTime;

    fn screen(snapshot: &Snapshot, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal
            .draw(|frame| render(frame, "test run", snapshot))
            .unwrap();
        let buffer = terminal.backend().buffer().clone();
        let mut text = String::new();
        for y in 0..height {
            for x in 0..width {
                text.push_str(buffer[(x, y)].symbol());
            }
            text.push('\n');
        }
        text
    }

    #[test]
    fn the_dashboard_shows_what_was_fed_in() {
        let feed = LiveFeed::new("test", EventTime::from_unix_millis(0));
        {
            let mut live = feed.lock();
            live.sample_metrics(10_000, &metrics_text(100, 10, [0, 0, 0, 0], 0));
            live.sample_metrics(12_000, &metrics_text(2_568, 50, [8, 8, 10, 10], 4_321));
            live.tier_changed(&change("u00000007", None, 1, "k1"));
            live.tier_changed(&change("u00000008", None, 1, "k2"));
            live.tier_changed(&change("u00000009", Some(1), 3, "k3"));
            live.trigger(
                &trigger("u00000011", "vip_welcome", "t1"),
                CampaignArm::Treated,
            );
            live.trigger(
                &trigger("u00000012", "cart_reminder", "t2"),
                CampaignArm::Control,
            );
            live.set_status("demo finished");
        }
        let text = screen(&feed.snapshot(), 120, 36);
        let has = |needle: &str| assert!(text.contains(needle), "no {needle:?} in\n{text}");
        // (2568 - 100) / 2 s.
        has("events/s 1234");
        has("4321");
        // p50 6.25 ms, p99 955 ms.
        has("6.2 ms");
        has("955 ms");
        has("demo finished");
        // Users per tier: tier 1 gained two and lost one (net 1); tier 3 gained one.
        let net = |t: u8| -> i64 {
            let label = format!("tier {t:<3}");
            let line = text
                .lines()
                .find(|l| l.contains(&label))
                .unwrap_or_default();
            let after = &line[line.find(&label).unwrap() + label.len()..];
            after[..9].trim().parse().unwrap()
        };
        assert_eq!((net(0), net(1), net(2), net(3)), (0, 1, 0, 1), "{text}");
        has("u00000009");
        has("tier 1 → tier 3");
        has("new → tier 1");
        has("vip_welcome");
        has("cart_reminder");
        has("u00000012");
        has("held");
        has("1 / 1");
    }

    #[test]
    fn an_empty_feed_draws_without_data() {
        let feed = LiveFeed::new("test", EventTime::from_unix_millis(0));
        let text = screen(&feed.snapshot(), 80, 24);
        assert!(text.contains("events/s 0"), "{text}");
        assert!(text.contains("latest tier changes"), "{text}");
    }
}
