//! `tierflow schemas`: the JSON Schema files are generated from the Rust types.

use std::fs;

use anyhow::{Context, Result, bail};
use tierflow_events::Contract;
use tierflow_events::schema::schema_text;

use crate::cli::SchemasArgs;

pub(crate) fn run(args: &SchemasArgs) -> Result<()> {
    let mut stale = Vec::new();
    if !args.check {
        fs::create_dir_all(&args.dir)
            .with_context(|| format!("creating {}", args.dir.display()))?;
    }
    for contract in Contract::ALL {
        let path = args.dir.join(contract.file_name());
        let text = schema_text(contract);
        if args.check {
            let committed = fs::read_to_string(&path).unwrap_or_default();
            if committed != text {
                stale.push(path.display().to_string());
            }
        } else {
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            tracing::info!(path = %path.display(), "schema written");
        }
    }
    if !stale.is_empty() {
        bail!(
            "these schema files differ from the Rust types: {}; run `tierflow schemas --dir {}`",
            stale.join(", "),
            args.dir.display()
        );
    }
    Ok(())
}
