//! The benchmark's own JetStream consumers, which check the relay's work from
//! the broker's side instead of trusting the relay's counters.
//!
//! [`ArrivalRecorder`] runs on a thread and connection of its own and notes
//! when each message arrives, for the latency measurement. [`check_order`]
//! reads a whole stream back after a drain and checks that every key's
//! positions arrived as 1, 2, 3, … exactly once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::BenchResult;

/// An ephemeral pull consumer that delivers the whole stream without acks.
fn unacked_consumer(name: &str) -> consumer::pull::Config {
    consumer::pull::Config {
        name: Some(name.to_owned()),
        ack_policy: consumer::AckPolicy::None,
        deliver_policy: consumer::DeliverPolicy::All,
        ..Default::default()
    }
}

/// Opens a message stream on a fresh consumer of `stream`.
async fn open(nats_url: &str, stream: &str, name: &str) -> BenchResult<consumer::pull::Stream> {
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .connect(nats_url)
        .await?;
    let js = jetstream::new(client);
    let consumer = js
        .get_stream(stream)
        .await?
        .create_consumer(unacked_consumer(name))
        .await?;
    Ok(consumer
        .stream()
        .max_messages_per_batch(1000)
        .expires(Duration::from_secs(2))
        .heartbeat(Duration::from_millis(500))
        .messages()
        .await?)
}

/// The event id a message carries in `Nats-Msg-Id`.
fn event_id(message: &async_nats::Message) -> Option<Uuid> {
    let value = message.headers.as_ref()?.get("Nats-Msg-Id")?;
    value.as_str().parse().ok()
}

/// Notes the arrival time of every message of a stream, on its own thread.
pub struct ArrivalRecorder {
    stop: Arc<AtomicBool>,
    seen: Arc<AtomicU64>,
    thread: JoinHandle<BenchResult<Vec<(Uuid, Instant)>>>,
}

impl ArrivalRecorder {
    /// Starts consuming `stream` and returns once the consumer exists.
    pub fn start(nats_url: &str, stream: &str) -> BenchResult<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicU64::new(0));
        let (ready, is_ready) = mpsc::channel::<Result<(), String>>();
        let (url, stream) = (nats_url.to_owned(), stream.to_owned());
        let (flag, count) = (stop.clone(), seen.clone());

        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let mut messages = match open(&url, &stream, "outbox-bench-arrivals").await {
                    Ok(m) => {
                        let _ = ready.send(Ok(()));
                        m
                    }
                    Err(err) => {
                        let _ = ready.send(Err(err.to_string()));
                        return Err(err);
                    }
                };

                let mut arrivals = Vec::new();
                while !flag.load(Ordering::Relaxed) {
                    let next = tokio::time::timeout(Duration::from_millis(50), messages.next());
                    let message = match next.await {
                        Err(_) => continue,
                        Ok(None) => break,
                        Ok(Some(message)) => message?,
                    };
                    let arrived = Instant::now();
                    if let Some(id) = event_id(&message) {
                        arrivals.push((id, arrived));
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(arrivals)
            })
        });

        match is_ready.recv() {
            Ok(Ok(())) => Ok(ArrivalRecorder { stop, seen, thread }),
            Ok(Err(message)) => Err(format!("could not start the consumer: {message}").into()),
            Err(_) => Err("the consumer thread ended before it was ready".into()),
        }
    }

    /// Messages received so far.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// Stops consuming and returns every (event id, arrival) pair.
    pub fn finish(self) -> BenchResult<Vec<(Uuid, Instant)>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| "the consumer thread panicked")?
    }
}

/// What reading a stream back found.
#[derive(Debug, Clone)]
pub struct OrderCheck {
    /// Messages read.
    pub messages: u64,
    /// Distinct keys among them.
    pub keys: usize,
    /// Messages whose position was not the one after their key's previous
    /// message: a gap, a duplicate or a reordering.
    pub out_of_order: u64,
    /// Messages without a readable key or position.
    pub unreadable: u64,
    /// How long reading took.
    pub took: Duration,
}

impl OrderCheck {
    /// Whether every key arrived complete and in order.
    pub fn ok(&self, expected: u64) -> bool {
        self.messages == expected && self.out_of_order == 0 && self.unreadable == 0
    }

    /// The findings as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "messages": self.messages,
            "keys": self.keys,
            "out_of_order": self.out_of_order,
            "unreadable": self.unreadable,
            "read_s": (self.took.as_secs_f64() * 10.0).round() / 10.0,
        })
    }
}

/// Reads `expected` messages of `stream` (or until none comes for five
/// seconds) and checks each key's `ce-sequence` runs 1, 2, 3, … without a gap.
pub async fn check_order(nats_url: &str, stream: &str, expected: u64) -> BenchResult<OrderCheck> {
    let started = Instant::now();
    let mut messages = open(nats_url, stream, "outbox-bench-order-check").await?;
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut check = OrderCheck {
        messages: 0,
        keys: 0,
        out_of_order: 0,
        unreadable: 0,
        took: Duration::ZERO,
    };

    while check.messages < expected {
        let message = match tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(message)) => message?,
        };
        check.messages += 1;
        let headers = message.headers.as_ref();
        let key = headers.and_then(|h| h.get("ce-partitionkey"));
        let seq = headers
            .and_then(|h| h.get("ce-sequence"))
            .and_then(|v| v.as_str().parse::<i64>().ok());
        let (Some(key), Some(seq)) = (key, seq) else {
            check.unreadable += 1;
            continue;
        };
        let previous = last.entry(key.as_str().to_owned()).or_insert(0);
        if seq != *previous + 1 {
            check.out_of_order += 1;
        }
        *previous = seq;
    }

    check.keys = last.len();
    check.took = started.elapsed();
    Ok(check)
}
