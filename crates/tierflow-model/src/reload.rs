//! Hot reload: the scorer in use is an `Arc` behind an atomic pointer. A poll reads the
//! artifact's manifest; when its version changes, the new artifact is loaded and checked
//! completely off to the side, then swapped in with one pointer store. Scoring never waits,
//! and a batch is scored by exactly one model (it holds its `Arc` for the whole batch).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use arc_swap::ArcSwap;
use burn::prelude::Device;

use crate::artifact::{Artifact, ArtifactError};
use crate::scorer::Scorer;

/// The current model, shared by every scoring task.
#[derive(Debug)]
pub struct ModelHandle {
    current: ArcSwap<Scorer>,
    /// Watched directory; `None` for a model that cannot change (the embedded default).
    dir: Option<PathBuf>,
    device: Device,
}

/// What a reload poll found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Swapped { from: String, to: String },
}

impl ModelHandle {
    /// Loads the artifact in `dir` and watches it.
    pub fn open(dir: &Path, device: &Device) -> Result<Self, ArtifactError> {
        let scorer = Scorer::new(&Artifact::load(dir)?, device)?;
        Ok(Self {
            current: ArcSwap::from_pointee(scorer),
            dir: Some(dir.to_path_buf()),
            device: device.clone(),
        })
    }

    /// A fixed model (no directory to watch).
    pub fn fixed(artifact: &Artifact, device: &Device) -> Result<Self, ArtifactError> {
        Ok(Self {
            current: ArcSwap::from_pointee(Scorer::new(artifact, device)?),
            dir: None,
            device: device.clone(),
        })
    }

    /// The model to score the next batch with.
    pub fn current(&self) -> Arc<Scorer> {
        self.current.load_full()
    }

    pub fn version(&self) -> String {
        self.current.load().version().to_owned()
    }

    /// Swaps in the artifact on disk if its version differs from the one in use. On any
    /// error the current model stays in place (a half-written artifact fails its checksum).
    pub fn reload_if_changed(&self) -> Result<Reload, ArtifactError> {
        let Some(dir) = &self.dir else {
            return Ok(Reload::Unchanged);
        };
        let manifest = Artifact::read_manifest(dir)?;
        let from = self.version();
        if manifest.model_version == from {
            return Ok(Reload::Unchanged);
        }
        let scorer = Scorer::new(&Artifact::load(dir)?, &self.device)?;
        let to = scorer.version().to_owned();
        self.current.store(Arc::new(scorer));
        tracing::info!(%from, %to, dir = %dir.display(), "model reloaded");
        Ok(Reload::Swapped { from, to })
    }

    /// Polls `reload_if_changed` every `interval` on a background thread until the returned
    /// watcher is dropped. Errors are logged and retried at the next poll.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> Watcher {
        let (stop, stopped) = mpsc::channel::<()>();
        let handle = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("model-reload".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    if let Err(e) = handle.reload_if_changed() {
                        tracing::warn!(error = %e, "model reload failed; keeping the current model");
                    }
                }
            })
            .map_err(|e| tracing::warn!(error = %e, "cannot start the model reload thread; the model will not hot-reload"))
            .ok();
        Watcher {
            stop: Some(stop),
            thread,
        }
    }
}

/// Stops the reload thread when dropped.
#[derive(Debug)]
pub struct Watcher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
