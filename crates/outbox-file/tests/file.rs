//! The file publisher against real files: many concurrent publishes, reopening,
//! syncing, configuration and write failures, and reading the file back.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use outbox_core::format_sequence;
use outbox_core::{ErrorKind, Event, EventId, Headers, Payload, Publisher};
use outbox_file::{FileOptions, FilePublisher, read_events};
use serde_json::{Value, json};

/// The longest any wait in these tests may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// Awaits `future`, failing the test if it takes longer than [`PATIENCE`].
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not finish within {PATIENCE:?}"),
    }
}

/// An event of `stream` at position `seq` of `key`: JSON for odd positions,
/// binary for even ones.
fn event(stream: &str, key: &str, seq: i64) -> Event {
    let payload = if seq % 2 == 1 {
        Payload::json(&json!({ "key": key, "seq": seq })).unwrap()
    } else {
        Payload::bytes("application/octet-stream", seq.to_be_bytes())
    };
    Event {
        id: seq,
        event_id: EventId::new(),
        stream: stream.into(),
        key: key.into(),
        seq,
        partition: 0,
        event_type: "order.changed".into(),
        payload,
        headers: Headers::new(),
        created_at: Utc::now(),
        attempts: 0,
    }
}

fn temp_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn five_thousand_concurrent_events_are_whole_lines() {
    const TASKS: usize = 50;
    const PER_TASK: i64 = 100;
    let (_dir, path) = temp_file();
    let publisher = FilePublisher::open(&path, FileOptions::default()).unwrap();
    let publisher = Arc::new(publisher);
    assert_eq!(publisher.name(), "file");

    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let publisher = Arc::clone(&publisher);
        tasks.spawn(async move {
            let key = format!("order-{task}");
            let mut sent = Vec::new();
            for seq in 1..=PER_TASK {
                let event = event("orders", &key, seq);
                publisher.publish(&event).await.unwrap();
                sent.push(event);
            }
            sent
        });
    }
    let sent: Vec<Event> = within("publishing", tasks.join_all())
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(sent.len(), 5000);

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5000);
    for line in &lines {
        let object: Value = serde_json::from_str(line).unwrap();
        assert_eq!(object["specversion"], "1.0", "{line}");
        assert_eq!(object["outboxstream"], "orders", "{line}");
    }

    let read = read_events(&path).unwrap();
    let ids: HashSet<EventId> = read.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), 5000);
    assert_eq!(ids, sent.iter().map(|e| e.event_id).collect());

    let by_id: HashMap<EventId, &Event> = sent.iter().map(|e| (e.event_id, e)).collect();
    for published in &read {
        let original = by_id[&published.event_id];
        assert_eq!(published.key, original.key);
        assert_eq!(published.seq, original.seq);
        assert_eq!(published.event_type, original.event_type);
        assert_eq!(published.payload, original.payload);
    }

    for task in 0..TASKS {
        let key = format!("order-{task}");
        let seqs: Vec<i64> = read
            .iter()
            .filter(|e| e.key == key)
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, (1..=PER_TASK).collect::<Vec<_>>(), "order of {key}");
    }
}

#[tokio::test]
async fn the_line_has_the_documented_shape() {
    let (_dir, path) = temp_file();
    let options = FileOptions {
        source: "https://shop.example/{stream}/events".to_owned(),
        ..FileOptions::default()
    };
    let publisher = FilePublisher::open(&path, options).unwrap();
    let mut event = event("invoices", "inv-7", 3);
    event.headers.insert("tenant".into(), "acme".into());

    within("publishing", publisher.publish(&event))
        .await
        .unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let object: Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(object["source"], "https://shop.example/invoices/events");
    assert_eq!(object["partitionkey"], "inv-7");
    assert_eq!(object["sequence"], format_sequence(3));
    assert_eq!(object["outboxheaders"], r#"{"tenant":"acme"}"#);
    assert_eq!(object["data"], json!({ "key": "inv-7", "seq": 3 }));
    assert!(object.get("data_base64").is_none());

    let read = read_events(&path).unwrap();
    assert_eq!(read[0].headers, event.headers);
    assert_eq!(read[0].time, event.created_at.trunc_subsecs(6));
}

#[tokio::test]
async fn reopening_appends_after_the_existing_lines() {
    let (_dir, path) = temp_file();
    let options = FileOptions {
        fsync: true,
        ..FileOptions::default()
    };

    let first = FilePublisher::open(&path, options.clone()).unwrap();
    for seq in 1..=3 {
        within("publishing", first.publish(&event("orders", "k", seq)))
            .await
            .unwrap();
    }
    drop(first);

    let second = FilePublisher::open(&path, options).unwrap();
    for seq in 4..=5 {
        within("publishing", second.publish(&event("orders", "k", seq)))
            .await
            .unwrap();
    }

    let seqs: Vec<i64> = read_events(&path).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn a_line_torn_by_a_crash_is_removed_on_open() {
    let (_dir, path) = temp_file();
    let publisher = FilePublisher::open(&path, FileOptions::default()).unwrap();
    within("publishing", publisher.publish(&event("orders", "k", 1)))
        .await
        .unwrap();
    drop(publisher);

    let mut content = std::fs::read(&path).unwrap();
    let whole = content.len();
    content.extend_from_slice(br#"{"specversion":"1.0","id":"0197"#);
    std::fs::write(&path, &content).unwrap();
    assert_eq!(
        read_events(&path).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );

    let publisher = FilePublisher::open(&path, FileOptions::default()).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), whole as u64);
    within("publishing", publisher.publish(&event("orders", "k", 2)))
        .await
        .unwrap();

    let seqs: Vec<i64> = read_events(&path).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2]);
}

#[test]
fn a_missing_directory_is_a_configuration_error_naming_the_path() {
    let (dir, _) = temp_file();
    let path = dir.path().join("absent").join("events.jsonl");

    let err = FilePublisher::open(&path, FileOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_directory_or_a_bad_source_is_a_configuration_error() {
    let (dir, path) = temp_file();

    let err = FilePublisher::open(dir.path(), FileOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);

    let options = FileOptions {
        source: String::new(),
        ..FileOptions::default()
    };
    let err = FilePublisher::open(&path, options).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[tokio::test]
async fn a_json_payload_that_does_not_parse_is_a_permanent_failure() {
    let (_dir, path) = temp_file();
    let publisher = FilePublisher::open(&path, FileOptions::default()).unwrap();
    let mut bad = event("orders", "k", 1);
    bad.payload = Payload::bytes("application/json", "{nope");

    let err = within("publishing", publisher.publish(&bad))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(read_events(&path).unwrap().is_empty());
}

/// `/dev/full` accepts the open and fails every write with "no space left".
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_full_disk_makes_the_publisher_unavailable() {
    let publisher = FilePublisher::open("/dev/full", FileOptions::default()).unwrap();

    for seq in 1..=2 {
        let err = within("publishing", publisher.publish(&event("orders", "k", seq)))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_retryable());
    }
}

#[tokio::test]
async fn the_consumer_follows_the_file_and_waits_for_whole_lines() {
    use outbox_core::Consumer;
    use std::io::Write;

    let (_dir, path) = temp_file();
    let publisher = FilePublisher::open(&path, FileOptions::default()).unwrap();
    let first = event("orders", "order-1", 1);
    publisher.publish(&first).await.unwrap();
    let mut consumer = outbox_file::FileConsumer::open(&path).await.unwrap();

    let delivery = within("first line", consumer.next())
        .await
        .unwrap()
        .unwrap();
    let received = delivery.event().unwrap().clone();
    assert_eq!(received.event_id, first.event_id);
    assert_eq!(received.seq, Some(1));
    assert_eq!(received.stream.as_deref(), Some("orders"));
    assert_eq!(received.payload, first.payload);
    delivery.ack().await.unwrap();

    // Half a line is not delivered until the rest arrives.
    let second = event("orders", "order-1", 2);
    let mut line = Vec::new();
    {
        let (_d, scratch) = temp_file();
        let p = FilePublisher::open(&scratch, FileOptions::default()).unwrap();
        p.publish(&second).await.unwrap();
        line.extend(std::fs::read(&scratch).unwrap());
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(&line[..10]).unwrap();
    file.flush().unwrap();
    let early = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await;
    assert!(early.is_err(), "a partial line was delivered");
    file.write_all(&line[10..]).unwrap();
    let delivery = within("second line", consumer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivery.event().unwrap().event_id, second.event_id);

    file.write_all(b"not json\n").unwrap();
    let delivery = within("bad line", consumer.next()).await.unwrap().unwrap();
    assert_eq!(delivery.event().unwrap_err().kind(), ErrorKind::Permanent);
}
