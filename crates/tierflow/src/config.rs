//! The one configuration loader: defaults, then a TOML file, then `TIERFLOW_SECTION__KEY`
//! environment variables, then command-line flags — later wins.

use std::path::Path;

use anyhow::{Context, Result, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use tierflow_pipeline::PipelineConfig;
pub(crate) use tierflow_pipeline::TopicsConfig;
use tierflow_store::RedisConfig;
use tierflow_stream::KafkaConfig;

/// Everything a tierflow process can be told. Unknown keys are errors, not silence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    pub(crate) kafka: KafkaConfig,
    pub(crate) topics: TopicsConfig,
    pub(crate) model: ModelSection,
    pub(crate) redis: RedisConfig,
    pub(crate) pipeline: PipelineConfig,
    pub(crate) http: HttpSection,
    pub(crate) campaigns: CampaignsSection,
}

/// Campaign triggers: the rules file (see `deploy/rules.toml`). Without one, `run` publishes
/// no campaign triggers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CampaignsSection {
    pub(crate) rules: Option<std::path::PathBuf>,
    /// How often `run` reads the rules file again and swaps changed rules in (0 = never).
    /// A file that does not parse is logged and the rules in use stay.
    pub(crate) reload_interval_secs: u64,
}

impl Default for CampaignsSection {
    fn default() -> Self {
        Self {
            rules: None,
            reload_interval_secs: 10,
        }
    }
}

/// The HTTP endpoints of `tierflow run`: `/metrics`, `/healthz`, `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HttpSection {
    /// Listen address; port 0 picks a free port (logged at start).
    pub(crate) listen: String,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

/// The burn CPU backend the model runs on. Both compute the same model; artifacts load on
/// either. burn 0.22 deprecates burn-ndarray in favour of flex, which is also faster here
/// (BENCHMARKS.md), so flex is the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Backend {
    /// burn-flex, burn's pure-Rust CPU backend.
    #[default]
    Flex,
    /// burn-ndarray (deprecated upstream since burn 0.22).
    Ndarray,
}

impl Backend {
    pub(crate) fn device(self) -> burn::prelude::Device {
        match self {
            Self::Flex => burn::prelude::Device::flex(),
            // Kept selectable while burn ships it; see the enum's note.
            #[allow(deprecated)]
            Self::Ndarray => burn::prelude::Device::ndarray(),
        }
    }
}

/// How the model is run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ModelSection {
    /// CPU backend for training and scoring.
    pub(crate) backend: Backend,
    /// Artifact directory `tierflow run` scores with (written by `tierflow train`); absent =
    /// the default model compiled into the binary.
    pub(crate) artifact: Option<std::path::PathBuf>,
    /// How often `tierflow run` checks the artifact directory for a new model version (hot
    /// reload; 0 = never).
    pub(crate) reload_interval_secs: u64,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            backend: Backend::default(),
            artifact: None,
            reload_interval_secs: 10,
        }
    }
}

/// Loads the configuration. `file` must exist when given.
pub(crate) fn load(file: Option<&Path>) -> Result<Config> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(file) = file {
        if !file.is_file() {
            bail!("config file {} does not exist", file.display());
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    // Only double-underscore names are configuration (TIERFLOW_KAFKA__BROKERS); single
    // names such as TIERFLOW_CONFIG belong to the command line.
    figment = figment.merge(
        Env::prefixed("TIERFLOW_")
            .filter(|key| key.as_str().contains("__"))
            .split("__"),
    );
    figment.extract().context("invalid configuration")
}

#[cfg(test)]
// figment's Jail fixes the closures' error type; its size is not ours to choose.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "tierflow.toml",
                r#"
                [kafka]
                brokers = "kafka-1:9092,kafka-2:9092"
                [kafka.properties]
                "security.protocol" = "SASL_SSL"
                [topics]
                partitions = 12
                "#,
            )?;
            jail.set_env("TIERFLOW_TOPICS__CLICKSTREAM", "shop.clicks");
            jail.set_env("TIERFLOW_CONFIG", "ignored-here");
            let config = load(Some(Path::new("tierflow.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.kafka.brokers, "kafka-1:9092,kafka-2:9092");
            assert_eq!(config.kafka.properties["security.protocol"], "SASL_SSL");
            assert_eq!(config.topics.partitions, 12);
            assert_eq!(config.topics.clickstream, "shop.clicks");
            assert_eq!(config.topics.dead_letter, "tierflow.dead_letter");
            Ok(())
        });
    }

    /// deploy/tierflow.toml documents every key with its default: it must parse and equal
    /// the defaults, so the file and the code cannot drift apart.
    #[test]
    fn the_documented_config_file_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/tierflow.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let from_file: Config = Figment::from(Toml::string(&text)).extract().unwrap();
        assert_eq!(from_file, Config::default());
    }

    #[test]
    fn unknown_keys_and_missing_files_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[kafka]\nbrokerz = \"x\"\n")?;
            let err = load(Some(Path::new("bad.toml"))).unwrap_err();
            assert!(format!("{err:#}").contains("brokerz"), "{err:#}");
            assert!(load(Some(Path::new("missing.toml"))).is_err());
            Ok(())
        });
    }
}
