//! Publishers that need no broker: events as lines of JSON in a file or on
//! standard output.
//!
//! [`FilePublisher`] appends to a file and [`StdoutPublisher`] writes to standard
//! output, both one event per line; [`read_events`] and [`parse_events`] read
//! the lines back as [`PublishedEvent`] values, so that a demo or a test can see
//! what was published, duplicates and order included. [`encode_structured`] and
//! [`parse_line`] are the codec itself, for brokers that carry the event as one
//! structured CloudEvents JSON body.
//!
//! # The line format
//!
//! Each line is one CloudEvents 1.0 event in the *structured* JSON format: a
//! single JSON object whose members are the attributes and the payload, followed
//! by a line feed. The members come in this order:
//!
//! | member | from |
//! | --- | --- |
//! | `specversion` | `1.0` |
//! | `id` | `event_id` |
//! | `source` | the configured template, by default [`DEFAULT_SOURCE`] |
//! | `type` | `event_type` |
//! | `time` | `created_at`, RFC 3339 in UTC with microseconds |
//! | `datacontenttype` | the payload's media type |
//! | `partitionkey` | `key` (Partitioning extension) |
//! | `sequence` | `seq`, zero-padded to 19 digits (Sequence extension) |
//! | `outboxstream` | `stream` |
//! | `outboxheaders` | the headers, a JSON object inside a string; absent if none |
//! | `data` | the payload, if its media type is JSON (`application/json`, `+json`) |
//! | `data_base64` | otherwise: the payload in standard base64 |
//!
//! The first eight are the attributes every publisher of the project sends
//! (see [`outbox_core::CloudEventAttributes`]). `outboxstream` and
//! `outboxheaders` are extension attributes of this format: CloudEvents names
//! attributes with lowercase letters and digits only, and allows strings but not
//! objects as their values, hence the headers as JSON text. A JSON payload is
//! embedded as written, except that line breaks between its tokens become spaces.
//! A `traceparent` header stays among the headers; it is not promoted to the
//! Distributed Tracing extension's attribute.
//!
//! Two events of key `order-42`, the first with a JSON payload and a `tenant`
//! header, the second with four bytes of `application/octet-stream`; each is one
//! line in the file, broken here for reading:
//!
//! ```text
//! {"specversion":"1.0","id":"019d2b7e-3c4a-7bb0-9d7e-5f3a1c2b4d6e",
//!   "source":"/outbox/orders","type":"order.created",
//!   "time":"2026-01-02T03:04:05.000000Z",
//!   "datacontenttype":"application/json","partitionkey":"order-42",
//!   "sequence":"0000000000000000003",
//!   "outboxstream":"orders","outboxheaders":"{\"tenant\":\"acme\"}",
//!   "data":{"total":30}}
//! {"specversion":"1.0","id":"019d2b7e-3c4b-7a01-8e2f-0b9c4d5e6f70",
//!   "source":"/outbox/orders","type":"order.created",
//!   "time":"2026-01-02T03:04:06.000000Z",
//!   "datacontenttype":"application/octet-stream","partitionkey":"order-42",
//!   "sequence":"0000000000000000004",
//!   "outboxstream":"orders","data_base64":"AAEC/w=="}
//! ```

mod consumer;
mod file;
mod line;
mod read;
mod stdout;
mod writer;

pub use consumer::FileConsumer;
pub use file::{FileOptions, FilePublisher};
pub use line::{DEFAULT_SOURCE, PublishedEvent, encode_structured, parse_line};
pub use read::{parse_events, read_events};
pub use stdout::{StdoutOptions, StdoutPublisher};
