//! Dead letters: a record tierflow cannot use goes to the dead-letter topic with its bytes,
//! its source position and the precise reason, so nothing is silently lost.

use rdkafka::Message;
use tierflow_events::{Bytes, DeadLetter, DecodeError, ErrorClass, EventTime};

use crate::produce::OutRecord;

/// The dead letter for a record that failed to decode.
pub fn for_decode_error<M: Message>(
    message: &M,
    error: &DecodeError,
    now: EventTime,
) -> DeadLetter {
    DeadLetter {
        schema_version: tierflow_events::output::OUTPUT_SCHEMA_VERSION,
        source_topic: message.topic().to_owned(),
        source_partition: message.partition(),
        source_offset: message.offset(),
        source_key: message.key().map(Bytes::from),
        original: Bytes::from(message.payload().unwrap_or_default()),
        error_class: ErrorClass::Decode,
        decode_error: Some(error.kind),
        field: error.field.clone(),
        reason: error.reason.clone(),
        failed_at: now,
    }
}

/// An [`OutRecord`] for an encoded dead letter, keyed like its source record.
pub fn out_record<'a>(
    topic: &'a str,
    letter: &'a DeadLetter,
    value: &'a [u8],
    headers: &'a [(&'a str, &'a [u8])],
) -> OutRecord<'a> {
    OutRecord {
        topic,
        key: letter.source_key.as_ref().map(|k| k.0.as_slice()),
        value,
        headers,
    }
}
