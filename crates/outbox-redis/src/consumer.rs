//! The consumer adapter: one Redis stream read through a consumer group.
//!
//! [`RedisConsumer`] first re-reads the entries still pending under its own name,
//! then claims entries other consumers left idle, then reads new entries, and
//! hands them over one by one in the order Redis returned them. Settling a
//! delivery sends `XACK`; a rejected one may first be copied to a dead-letter
//! stream.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use outbox_core::{Acknowledge, BoxFuture, Consumer, Delivery, Error, ErrorKind, Result};
use redis::aio::ConnectionManager;
use redis::{RedisError, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::entry::{self, Fields};
use crate::failure;
use crate::options::{RedisConsumerOptions, redact_url};
use crate::publisher::{connect, server_version};

/// Copies an entry to the dead-letter stream and acknowledges it, in one step:
/// an error in `XADD` stops the script before `XACK`, so a copy that failed
/// leaves the entry pending. `KEYS`: the stream, the dead-letter stream. `ARGV`:
/// the group, the entry id, then the fields.
const DEAD_LETTER_SCRIPT: &str = "redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3)) \
     return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])";

/// Reads one Redis stream as a member of a consumer group.
///
/// Deliveries come in the order of the stream within each phase of reading:
///
/// 1. On start, the entries still pending under this consumer's name (delivered
///    to an earlier run and never acknowledged), read with
///    `XREADGROUP ... STREAMS <key> 0`.
/// 2. When claiming is on ([`RedisConsumerOptions::claim_min_idle`]), at start
///    and once per `claim_min_idle` after that, the entries of any consumer of
///    the group, this one included, that have been pending longer than
///    `claim_min_idle` (`XAUTOCLAIM`). This is how an entry delivered to a
///    consumer that died, or dropped unsettled by this one, comes back.
/// 3. New entries, `XREADGROUP ... COUNT <batch_size> BLOCK <block> STREAMS
///    <key> >`.
///
/// Redis itself never redelivers: an entry stays pending under the consumer it
/// was delivered to until it is acknowledged or claimed. Re-read and claimed
/// entries come after later entries of their key that were delivered meanwhile,
/// so key order holds only for entries delivered once; the inbox's deduplication
/// by event id absorbs the repeats.
///
/// Up to [`RedisConsumerOptions::max_in_flight`] deliveries may be unsettled at
/// once. `next` is cancel-safe: a read cut off by a cancelled call is carried on
/// by the next call, and nothing read is lost. Entries read but not yet handed
/// over when the consumer is dropped stay pending under its name, for the next
/// run or a claim.
///
/// A read that finds the group gone, as after a restart of a server that keeps
/// nothing on disk, creates it again when
/// [`RedisConsumerOptions::create_group`] is on, and reads on.
///
/// An entry whose fields cannot be decoded comes out as a malformed delivery with
/// a [`ErrorKind::Permanent`] error. An entry that was trimmed or deleted while
/// pending has no fields left; it is acknowledged and skipped, with a warning.
///
/// Rejecting copies the entry's fields unchanged to
/// [`RedisConsumerOptions::dead_letter_stream`] and acknowledges it, both in one
/// script; without a dead-letter stream, a rejected entry is only acknowledged,
/// since Redis has no dead-letter route of its own. Redis counts deliveries per
/// entry but this consumer does not act on the count: an entry that keeps failing
/// is redelivered until its handler rejects it.
pub struct RedisConsumer {
    reader: ConnectionManager,
    target: Arc<Target>,
    consumer: String,
    create_group: bool,
    batch_size: usize,
    block: Duration,
    claim_min_idle: Option<Duration>,
    phase: Phase,
    claim_cursor: Option<String>,
    next_claim: Instant,
    read: Option<(Read, BoxFuture<'static, redis::RedisResult<Value>>)>,
    buffer: VecDeque<Entry>,
    permits: Arc<Semaphore>,
}

/// What settling needs to know, shared by every delivery.
struct Target {
    acks: ConnectionManager,
    stream_key: String,
    group: String,
    dead_letter_stream: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Re-reading this consumer's pending entries, after the given id.
    Own { after: String },
    /// Reading new entries.
    New,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    Own,
    Claim,
    New,
}

/// A stream entry; `fields` is `None` for an entry deleted while pending.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    id: String,
    fields: Option<Fields>,
}

impl RedisConsumer {
    /// Checks `options`, connects twice to the server (one connection for the
    /// blocking reads, one for everything else) and, with
    /// [`RedisConsumerOptions::create_group`], creates the group if it is missing.
    ///
    /// Fails with `Config` for invalid options, a URL the client refuses or a
    /// key that holds something other than a stream, and with `Unavailable` when
    /// the server cannot be reached.
    ///
    /// ```no_run
    /// use outbox_core::Consumer;
    /// use outbox_redis::{RedisConsumer, RedisConsumerOptions};
    ///
    /// # async fn run() -> outbox_core::Result<()> {
    /// let options = RedisConsumerOptions::new("outbox:orders", "billing", "billing-1");
    /// let mut consumer = RedisConsumer::connect(options).await?;
    /// while let Some(delivery) = consumer.next().await? {
    ///     match delivery.event() {
    ///         Ok(event) => println!("{} {}", event.event_type, event.key),
    ///         Err(_) => {
    ///             delivery.reject().await?;
    ///             continue;
    ///         }
    ///     }
    ///     delivery.ack().await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(options: RedisConsumerOptions) -> Result<RedisConsumer> {
        check_options(&options)?;
        let shown = redact_url(&options.url);
        let read_timeout = options.block + options.response_timeout;
        let reader = connect(&options.url, &shown, options.connect_timeout, read_timeout).await?;
        let acks = connect(
            &options.url,
            &shown,
            options.connect_timeout,
            options.response_timeout,
        )
        .await?;

        let consumer = RedisConsumer {
            reader,
            target: Arc::new(Target {
                acks,
                stream_key: options.stream_key,
                group: options.group,
                dead_letter_stream: options.dead_letter_stream,
            }),
            consumer: options.consumer,
            create_group: options.create_group,
            batch_size: options.batch_size,
            block: options.block,
            claim_min_idle: options.claim_min_idle,
            phase: Phase::Own {
                after: "0".to_owned(),
            },
            claim_cursor: None,
            next_claim: Instant::now(),
            read: None,
            buffer: VecDeque::new(),
            permits: Arc::new(Semaphore::new(options.max_in_flight)),
        };
        if options.create_group {
            consumer.ensure_group().await?;
        }

        let version = server_version(&consumer.reader).await;
        info!(
            url = %shown,
            server_version = %version,
            stream_key = %consumer.target.stream_key,
            group = %consumer.target.group,
            consumer = %consumer.consumer,
            "redis consumer ready"
        );
        Ok(consumer)
    }

    /// Creates the consumer group at the start of the stream, and the stream if
    /// it is missing (`XGROUP CREATE <key> <group> 0 MKSTREAM`). Returns whether
    /// it created the group; an existing group is left as it is.
    ///
    /// Starting at `0` means a new group also gets the entries added before it
    /// existed, as far as trimming has kept them.
    pub async fn ensure_group(&self) -> Result<bool> {
        create_group(&self.target).await
    }

    /// Reads the next batch into the buffer, carrying on a read that a cancelled
    /// call left unfinished.
    async fn fill(&mut self) -> Result<()> {
        if self.read.is_none() {
            let read = self.start_read();
            self.read = Some(read);
        }
        let (read, future) = self.read.as_mut().expect("set above");
        let result = future.await;
        let read = *read;
        self.read = None;

        let reply = match result {
            Ok(reply) => reply,
            Err(e) if e.code() == Some("NOGROUP") && self.create_group => {
                // The stream or group is gone, as after a restart of a server
                // that keeps nothing on disk: make it again and read on.
                warn!(
                    stream_key = %self.target.stream_key,
                    group = %self.target.group,
                    "redis group is missing; creating it again"
                );
                let target = Arc::clone(&self.target);
                create_group(&target).await?;
                self.phase = Phase::New;
                return Ok(());
            }
            Err(e) => return Err(self.read_failure(e)),
        };
        let deleted = match read {
            Read::Own => self.take_own(reply)?,
            Read::Claim => self.take_claimed(reply)?,
            Read::New => self.take_new(reply)?,
        };
        if !deleted.is_empty() {
            // Not through `&self`, which would make this future need `Sync`.
            settle_deleted(Arc::clone(&self.target), deleted).await;
        }
        Ok(())
    }

    /// The read to run now: own pending entries first, then a due claim, else new
    /// entries, blocking no longer than until the next claim is due.
    fn start_read(&mut self) -> (Read, BoxFuture<'static, redis::RedisResult<Value>>) {
        let now = Instant::now();
        let count = self.batch_size;
        let (read, command) = if let Phase::Own { after } = &self.phase {
            (Read::Own, self.read_group(count, None, after))
        } else if let Some(min_idle) = self
            .claim_min_idle
            .filter(|_| self.claim_cursor.is_some() || now >= self.next_claim)
        {
            let cursor = self.claim_cursor.get_or_insert_with(|| "0-0".to_owned());
            let mut command = redis::cmd("XAUTOCLAIM");
            command
                .arg(&self.target.stream_key)
                .arg(&self.target.group)
                .arg(&self.consumer)
                .arg(millis(min_idle))
                .arg(cursor.as_str())
                .arg("COUNT")
                .arg(count);
            (Read::Claim, command)
        } else {
            let mut block = self.block;
            if self.claim_min_idle.is_some() {
                block = block.min(self.next_claim.saturating_duration_since(now));
            }
            (Read::New, self.read_group(count, Some(block), ">"))
        };

        let mut connection = self.reader.clone();
        let future = Box::pin(async move { command.query_async(&mut connection).await });
        (read, future)
    }

    fn read_group(&self, count: usize, block: Option<Duration>, after: &str) -> redis::Cmd {
        let mut command = redis::cmd("XREADGROUP");
        command
            .arg("GROUP")
            .arg(&self.target.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count);
        if let Some(block) = block {
            // `BLOCK 0` would wait for ever.
            command.arg("BLOCK").arg(millis(block).max(1));
        }
        command
            .arg("STREAMS")
            .arg(&self.target.stream_key)
            .arg(after);
        command
    }

    /// Takes a batch of own pending entries; an empty one ends the phase.
    fn take_own(&mut self, reply: Value) -> Result<Vec<String>> {
        let entries = read_reply(reply).map_err(|e| unreadable("XREADGROUP", e))?;
        match entries.last() {
            None => {
                self.phase = Phase::New;
                debug!(stream_key = %self.target.stream_key, "read own pending entries");
            }
            Some(last) => {
                self.phase = Phase::Own {
                    after: last.id.clone(),
                };
                info!(
                    stream_key = %self.target.stream_key,
                    entry_count = entries.len(),
                    "redelivering own pending entries"
                );
            }
        }
        Ok(self.buffer_entries(entries))
    }

    /// Takes a batch of claimed entries; the cursor `0-0` ends the sweep.
    fn take_claimed(&mut self, reply: Value) -> Result<Vec<String>> {
        let (cursor, entries) = claim_reply(reply).map_err(|e| unreadable("XAUTOCLAIM", e))?;
        if !entries.is_empty() {
            info!(
                stream_key = %self.target.stream_key,
                entry_count = entries.len(),
                "claimed idle entries"
            );
        }
        if cursor == "0-0" {
            self.claim_cursor = None;
            self.next_claim = Instant::now() + self.claim_min_idle.unwrap_or_default();
        } else {
            self.claim_cursor = Some(cursor);
        }
        Ok(self.buffer_entries(entries))
    }

    fn take_new(&mut self, reply: Value) -> Result<Vec<String>> {
        let entries = read_reply(reply).map_err(|e| unreadable("XREADGROUP", e))?;
        Ok(self.buffer_entries(entries))
    }

    /// Queues the entries that still have fields; returns the ids of the others.
    fn buffer_entries(&mut self, entries: Vec<Entry>) -> Vec<String> {
        let mut deleted = Vec::new();
        for entry in entries {
            if entry.fields.is_some() {
                self.buffer.push_back(entry);
            } else {
                deleted.push(entry.id);
            }
        }
        deleted
    }

    fn read_failure(&self, err: RedisError) -> Error {
        if err.code() == Some("NOGROUP") {
            return Error::config(format!(
                "redis group {} of stream {} does not exist",
                self.target.group, self.target.stream_key
            ))
            .with_source(err);
        }
        failure::command_failure(
            err,
            format!("cannot read redis stream {}", self.target.stream_key),
        )
    }

    fn deliver(&self, entry: Entry, permit: OwnedSemaphorePermit) -> Delivery {
        let fields = entry.fields.unwrap_or_default();
        let event = entry::decode(&fields);
        if let Err(err) = &event {
            warn!(
                stream_key = %self.target.stream_key,
                entry_id = %entry.id,
                error = %err.chain(),
                "cannot decode entry"
            );
        }

        let keep = self.target.dead_letter_stream.is_some();
        let acker = RedisAcker {
            target: Arc::clone(&self.target),
            id: entry.id,
            fields: keep.then_some(fields),
            _permit: permit,
        };
        Delivery::decoded(event, acker)
    }
}

impl Consumer for RedisConsumer {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn next(&mut self) -> Result<Option<Delivery>> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");

        loop {
            if let Some(entry) = self.buffer.pop_front() {
                return Ok(Some(self.deliver(entry, permit)));
            }
            self.fill().await?;
        }
    }
}

impl fmt::Debug for RedisConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConsumer")
            .field("stream_key", &self.target.stream_key)
            .field("group", &self.target.group)
            .field("consumer", &self.consumer)
            .field("phase", &self.phase)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

/// Settles one entry; holds a place among the deliveries in flight until it is
/// settled or dropped.
struct RedisAcker {
    target: Arc<Target>,
    id: String,
    /// The entry's fields, kept only when rejects copy them to a dead-letter
    /// stream.
    fields: Option<Fields>,
    _permit: OwnedSemaphorePermit,
}

impl RedisAcker {
    async fn acknowledge(&self) -> Result<()> {
        let target = &self.target;
        let mut connection = target.acks.clone();
        let acked: i64 = redis::cmd("XACK")
            .arg(&target.stream_key)
            .arg(&target.group)
            .arg(&self.id)
            .query_async(&mut connection)
            .await
            .map_err(|e| failure::command_failure(e, "cannot acknowledge redis entry"))?;
        if acked == 0 {
            debug!(entry_id = %self.id, "redis entry was no longer pending");
        }
        Ok(())
    }

    async fn dead_letter(&self, dead_letter_stream: &str, fields: &Fields) -> Result<()> {
        let target = &self.target;
        let mut script = redis::cmd("EVAL");
        script
            .arg(DEAD_LETTER_SCRIPT)
            .arg(2)
            .arg(&target.stream_key)
            .arg(dead_letter_stream)
            .arg(&target.group)
            .arg(&self.id);
        for (name, value) in fields {
            script.arg(name).arg(value);
        }

        let mut connection = target.acks.clone();
        let _: i64 = script.query_async(&mut connection).await.map_err(|e| {
            failure::command_failure(
                e,
                format!("cannot move redis entry to dead-letter stream {dead_letter_stream}"),
            )
        })?;
        info!(
            stream_key = %target.stream_key,
            entry_id = %self.id,
            dead_letter_stream,
            "moved entry to dead-letter stream"
        );
        Ok(())
    }
}

impl Acknowledge for RedisAcker {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move { self.acknowledge().await })
    }

    fn reject(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            match (&self.target.dead_letter_stream, &self.fields) {
                (Some(stream), Some(fields)) if !fields.is_empty() => {
                    self.dead_letter(stream, fields).await
                }
                _ => {
                    debug!(entry_id = %self.id, "rejected entry, acknowledging it");
                    self.acknowledge().await
                }
            }
        })
    }
}

/// Creates the group of `target` at the start of its stream unless it exists.
async fn create_group(target: &Target) -> Result<bool> {
    let mut connection = target.acks.clone();
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&target.stream_key)
        .arg(&target.group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut connection)
        .await;

    match created {
        Ok(()) => {
            info!(stream_key = %target.stream_key, group = %target.group, "created group");
            Ok(true)
        }
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(false),
        Err(e) if e.code() == Some("WRONGTYPE") => Err(Error::config(format!(
            "redis key {} holds something other than a stream",
            target.stream_key
        ))
        .with_source(e)),
        Err(e) => Err(failure::command_failure(
            e,
            format!("cannot create redis group {}", target.group),
        )),
    }
}

/// Acknowledges entries that were deleted while pending: they can never be
/// delivered. A failure leaves them pending, to be met again.
async fn settle_deleted(target: Arc<Target>, ids: Vec<String>) {
    warn!(
        stream_key = %target.stream_key,
        entry_count = ids.len(),
        "acknowledging pending entries deleted from the stream"
    );
    let mut connection = target.acks.clone();
    let acked: redis::RedisResult<i64> = redis::cmd("XACK")
        .arg(&target.stream_key)
        .arg(&target.group)
        .arg(&ids)
        .query_async(&mut connection)
        .await;
    if let Err(e) = acked {
        warn!(stream_key = %target.stream_key, error = %e, "cannot acknowledge entries");
    }
}

fn check_options(options: &RedisConsumerOptions) -> Result<()> {
    for (name, value) in [
        ("stream key", &options.stream_key),
        ("group", &options.group),
        ("consumer name", &options.consumer),
    ] {
        if value.is_empty() {
            return Err(Error::config(format!("redis consumer {name} is empty")));
        }
    }
    if options.dead_letter_stream.as_deref() == Some(options.stream_key.as_str()) {
        return Err(Error::config(
            "redis dead-letter stream must differ from the stream read",
        ));
    }
    if options.batch_size == 0 || options.max_in_flight == 0 {
        return Err(Error::config(
            "redis consumer batch_size and max_in_flight must be above zero",
        ));
    }
    if options.block < Duration::from_millis(1)
        || options
            .claim_min_idle
            .is_some_and(|d| d < Duration::from_millis(1))
    {
        return Err(Error::config(
            "redis consumer block and claim_min_idle must be at least 1 ms",
        ));
    }
    if options.response_timeout.is_zero() || options.connect_timeout.is_zero() {
        return Err(Error::config("redis timeouts must be above zero"));
    }
    Ok(())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn unreadable(command: &str, problem: &'static str) -> Error {
    Error::new(
        ErrorKind::Transient,
        format!("unexpected reply to {command}: {problem}"),
    )
}

/// The entries of an `XREADGROUP` reply for one stream: nil when nothing came,
/// else `[[key, [entry, ...]]]` (a map from key to entries under RESP3).
fn read_reply(reply: Value) -> Result<Vec<Entry>, &'static str> {
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| match stream {
                Value::Array(mut pair) if pair.len() == 2 => Ok(pair.swap_remove(1)),
                _ => Err("a stream is not a [key, entries] pair"),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        _ => return Err("not an array of streams"),
    };

    let mut entries = Vec::new();
    for stream in streams {
        entries.extend(entry_list(stream)?);
    }
    Ok(entries)
}

/// The cursor and entries of an `XAUTOCLAIM` reply: `[cursor, [entry, ...],
/// [deleted id, ...]]`. Deleted ids are already dropped by the server.
fn claim_reply(reply: Value) -> Result<(String, Vec<Entry>), &'static str> {
    let Value::Array(parts) = reply else {
        return Err("not an array");
    };
    let mut parts = parts.into_iter();
    let cursor = parts.next().and_then(text).ok_or("no cursor")?;
    let entries = entry_list(parts.next().ok_or("no entries")?)?;
    Ok((cursor, entries))
}

/// `[[id, [field, value, ...]], ...]`, where a deleted entry has nil fields (or
/// is nil itself, as Redis 6.2 answers `XAUTOCLAIM`).
fn entry_list(value: Value) -> Result<Vec<Entry>, &'static str> {
    let Value::Array(items) = value else {
        return Err("entries are not an array");
    };
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(parts) = item else {
            continue;
        };
        let mut parts = parts.into_iter();
        let id = parts.next().and_then(text).ok_or("an entry has no id")?;
        let fields = match parts.next() {
            None | Some(Value::Nil) => None,
            Some(Value::Array(flat)) => Some(pairs(flat)?),
            Some(Value::Map(map)) => Some(
                map.into_iter()
                    .map(|(n, v)| Some((bytes(n)?, bytes(v)?)))
                    .collect::<Option<Fields>>()
                    .ok_or("a field is not a string")?,
            ),
            Some(_) => return Err("an entry's fields are not an array"),
        };
        entries.push(Entry { id, fields });
    }
    Ok(entries)
}

fn pairs(flat: Vec<Value>) -> Result<Fields, &'static str> {
    if !flat.len().is_multiple_of(2) {
        return Err("an entry has a field without a value");
    }
    let mut fields = Vec::with_capacity(flat.len() / 2);
    let mut flat = flat.into_iter();
    while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
        let field = bytes(name)
            .zip(bytes(value))
            .ok_or("a field is not a string")?;
        fields.push(field);
    }
    Ok(fields)
}

fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        _ => None,
    }
}

fn text(value: Value) -> Option<String> {
    bytes(value).and_then(|b| String::from_utf8(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[&str]) -> Value {
        let fields = fields.iter().map(|f| bulk(f)).collect();
        Value::Array(vec![bulk(id), Value::Array(fields)])
    }

    #[test]
    fn read_replies_keep_the_stream_order_and_mark_deleted_entries() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("outbox:orders"),
            Value::Array(vec![
                entry("1-0", &["id", "a", "data", "x"]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
                entry("3-0", &["id", "c"]),
            ]),
        ])]);
        let entries = read_reply(reply).unwrap();

        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["1-0", "2-0", "3-0"]);
        assert_eq!(
            entries[0].fields.as_ref().unwrap()[1],
            (b"data".to_vec(), b"x".to_vec())
        );
        assert_eq!(entries[1].fields, None);
        assert!(read_reply(Value::Nil).unwrap().is_empty());
    }

    #[test]
    fn resp3_maps_are_read_too() {
        let reply = Value::Map(vec![(
            bulk("s"),
            Value::Array(vec![entry("5-1", &["id", "e"])]),
        )]);
        assert_eq!(read_reply(reply).unwrap()[0].id, "5-1");
    }

    #[test]
    fn claim_replies_carry_the_cursor() {
        let reply = Value::Array(vec![
            bulk("7-0"),
            Value::Array(vec![entry("4-0", &["id", "d"]), Value::Nil]),
            Value::Array(vec![bulk("6-0")]),
        ]);
        let (cursor, entries) = claim_reply(reply).unwrap();
        assert_eq!(cursor, "7-0");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].id, "4-0");
    }

    #[test]
    fn malformed_replies_are_refused() {
        assert!(read_reply(Value::Int(1)).is_err());
        let odd = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![entry("1-0", &["id"])]),
        ])]);
        assert!(read_reply(odd).is_err());
        assert!(claim_reply(Value::Array(vec![])).is_err());
    }

    #[test]
    fn options_that_cannot_work_are_refused() {
        let base = RedisConsumerOptions::new("s", "g", "c");
        check_options(&base).unwrap();
        let bad = [
            RedisConsumerOptions {
                group: String::new(),
                ..base.clone()
            },
            RedisConsumerOptions {
                max_in_flight: 0,
                ..base.clone()
            },
            RedisConsumerOptions {
                block: Duration::ZERO,
                ..base.clone()
            },
            RedisConsumerOptions {
                claim_min_idle: Some(Duration::ZERO),
                ..base.clone()
            },
            RedisConsumerOptions {
                dead_letter_stream: Some("s".into()),
                ..base.clone()
            },
        ];
        for options in bad {
            let err = check_options(&options).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{options:?}");
        }
    }
}
