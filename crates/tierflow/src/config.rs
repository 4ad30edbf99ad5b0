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
    pub(crate) secrets: SecretsSection,
}

/// Secrets read from files at start (mounted Kubernetes or Docker secrets), so they need not
/// sit in the config file or the environment. A file's contents, trimmed, replace the value;
/// errors name the file, never its contents. tierflow never logs these values (a test reads
/// the logs of a run to check).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SecretsSection {
    /// A file holding `redis.url` (which carries the password: `redis://:PASSWORD@host`).
    pub(crate) redis_url_file: Option<std::path::PathBuf>,
    /// librdkafka property → file holding its value (e.g. `sasl.password`,
    /// `ssl.key.password`).
    pub(crate) kafka_property_files: std::collections::BTreeMap<String, std::path::PathBuf>,
}

impl Config {
    /// Reads the secret files into the settings they stand for.
    fn read_secrets(&mut self) -> Result<()> {
        let read = |path: &Path, what: &str| -> Result<String> {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {what} from {}", path.display()))?;
            let text = text.trim();
            if text.is_empty() {
                bail!("{what}: {} is empty", path.display());
            }
            Ok(text.to_owned())
        };
        if let Some(path) = &self.secrets.redis_url_file {
            self.redis.url = read(path, "secrets.redis_url_file")?;
        }
        for (property, path) in &self.secrets.kafka_property_files {
            let value = read(path, &format!("kafka property {property:?}"))?;
            self.kafka.properties.insert(property.clone(), value);
        }
        Ok(())
    }
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
    let mut config: Config = figment.extract().context("invalid configuration")?;
    config.read_secrets()?;
    Ok(config)
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

    /// Secret files replace the settings they name; a missing one is an error that names
    /// the file.
    #[test]
    fn secrets_come_from_files() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("redis-url", "redis://:pw-from-file@10.0.0.1:6379/\n")?;
            jail.create_file("kafka-password", "  kafka-pw  ")?;
            jail.create_file(
                "tierflow.toml",
                "[secrets]\nredis_url_file = \"redis-url\"\n\
                 [secrets.kafka_property_files]\n\"sasl.password\" = \"kafka-password\"\n",
            )?;
            let config = load(Some(Path::new("tierflow.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.redis.url, "redis://:pw-from-file@10.0.0.1:6379/");
            assert_eq!(config.kafka.properties["sasl.password"], "kafka-pw");
            jail.set_env("TIERFLOW_SECRETS__REDIS_URL_FILE", "nowhere");
            let err = load(Some(Path::new("tierflow.toml"))).unwrap_err();
            assert!(format!("{err:#}").contains("nowhere"), "{err:#}");
            Ok(())
        });
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
