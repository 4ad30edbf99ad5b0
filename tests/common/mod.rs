//! Helpers shared by the end-to-end tests of the `tierflow` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};

/// Runs the binary under test with `args`, ignoring any TIERFLOW_CONFIG of the caller.
pub(crate) fn tierflow(args: &[&str]) -> Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_tierflow"))
        .args(args)
        .env_remove("TIERFLOW_CONFIG")
        .output()
        .context("running tierflow")
}

/// The output of a run that must have succeeded; otherwise an error with its stderr.
pub(crate) fn ok(output: Output) -> Result<Output> {
    ensure!(
        output.status.success(),
        "tierflow failed with {}:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shared real data sets: `$TIERFLOW_DATA_DIR`, else `../shared/data` beside the checkout.
pub(crate) fn data_file(name: &str) -> PathBuf {
    let dir = std::env::var_os("TIERFLOW_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/data"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "this test needs the real data set {} (set TIERFLOW_DATA_DIR to the folder holding it)",
        path.display()
    );
    path
}
