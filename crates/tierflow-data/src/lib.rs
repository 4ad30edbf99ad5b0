//! Data in: clickstream events from a seeded simulator ([`synth`]) or from real data sets
//! ([`import`]). Pure: no Kafka, no files opened here; callers hand in readers and take
//! events out, so the CLI decides about progress bars, sinks and rates.

pub mod import;
pub mod synth;
