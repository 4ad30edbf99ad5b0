//! `tierflow import`: a real data set to clickstream events, with a progress bar over the
//! input and a report of every row that could not be mapped.

use std::fs::File;
use std::io::Read;

use anyhow::{Context, Result};
use flate2::read::MultiGzDecoder;
use tierflow_data::import::{self, CsvMapping, ImportReport, Source, TaobaoOptions};

use crate::cli::{ImportArgs, ImportFormat};
use crate::config::Config;
use crate::progress;
use crate::sink::{Sink, pump};

pub(crate) async fn run(args: ImportArgs, config: &Config) -> Result<()> {
    let source = source(&args)?;
    let file =
        File::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut sink = Sink::open(&args.output, config).await?;
    let input_bar = progress::bytes(size, "importing");
    let reader = input_bar.wrap_read(file);
    let reader: Box<dyn Read + Send> = if args.input.extension().is_some_and(|e| e == "gz") {
        Box::new(MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let records_bar = indicatif::ProgressBar::hidden();
    let (report, _end) = pump(&mut sink, &records_bar, move |emitter| {
        import::import(&source, reader, &mut |event| {
            let key = event.user_id.clone();
            if emitter.emit(key, event.to_json()) {
                Ok(())
            } else {
                Err("the sink stopped (error or interrupt)".into())
            }
        })
    })
    .await?;
    input_bar.finish_and_clear();
    let summary = sink.finish().await?;
    let report: ImportReport =
        report.with_context(|| format!("importing {}", args.input.display()))?;
    eprintln!("{report}");
    eprintln!(
        "wrote {} events ({} bytes) to {}",
        summary.records, summary.bytes, summary.destination
    );
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report_json(&report))?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn source(args: &ImportArgs) -> Result<Source> {
    Ok(match args.format {
        ImportFormat::OnlineRetail => Source::OnlineRetail,
        ImportFormat::Taobao => Source::Taobao(TaobaoOptions {
            unit_price: args.unit_price,
            ..TaobaoOptions::default()
        }),
        ImportFormat::Csv => {
            let path = args
                .mapping
                .as_ref()
                .context("--mapping is required for csv")?;
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Source::Generic(
                CsvMapping::from_toml(&text)
                    .with_context(|| format!("mapping {}", path.display()))?,
            )
        }
    })
}

fn report_json(report: &ImportReport) -> serde_json::Value {
    serde_json::json!({
        "rows_read": report.rows_read,
        "rows_in_events": report.rows_in_events,
        "events": report.events,
        "events_by_type": report.events_by_type.iter().map(|(t, n)| (t.as_str().to_owned(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
        "rejected_rows": report.rejected_rows,
        "adjusted": report.adjusted,
        "users": report.users,
        "first_ts": report.first_ts.map(|t| t.to_rfc3339()),
        "last_ts": report.last_ts.map(|t| t.to_rfc3339()),
    })
}
