//! The `outbox` binary end to end, against a SQLite file and a private
//! PostgreSQL schema.

use std::process::{Command, Output};

use outbox_testkit::SqliteFile;

fn outbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_outbox"))
        .args(args)
        .env_remove("OUTBOX_DATABASE_URL")
        .env_remove("OUTBOX_SCHEMA")
        .output()
        .expect("run the outbox binary")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(args: &[&str]) -> String {
    let out = outbox(args);
    assert!(
        out.status.success(),
        "outbox {args:?} failed: {}",
        stderr(&out)
    );
    stdout(&out)
}

fn pending(db: &[&str]) -> u64 {
    let mut args = vec!["status", "--json"];
    args.extend_from_slice(db);
    let status: serde_json::Value = serde_json::from_str(&ok(&args)).expect("status is json");
    assert!(status["oldest_pending_age_seconds"].is_number() || status["pending"] == 0);
    assert!(status["dead_lettered"].is_u64());
    status["pending"].as_u64().expect("pending is a count")
}

/// Migrates twice, enqueues `n` events, and checks what status reports.
fn migrate_enqueue_status(db: &[&str], n: u64) {
    let mut migrate = vec!["migrate"];
    migrate.extend_from_slice(db);
    assert!(ok(&migrate).contains("applied migrations 1"));
    assert!(
        ok(&migrate).contains("nothing to do"),
        "second migrate is a no-op"
    );
    assert_eq!(pending(db), 0);

    for i in 0..n {
        let key = format!("order-{}", i % 3);
        let payload = format!(r#"{{"n": {i}}}"#);
        let mut args = vec!["enqueue", "--stream", "orders", "--key", &key];
        args.extend_from_slice(&["--type", "order.created", "--payload", &payload, "--json"]);
        args.extend_from_slice(db);
        let enqueued: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
        assert_eq!(enqueued["seq"].as_u64(), Some(i / 3 + 1));
    }
    assert_eq!(pending(db), n);
}

#[test]
fn sqlite_migrate_enqueue_status() {
    let file = SqliteFile::new();
    let url = file.url();
    migrate_enqueue_status(&["--database-url", &url], 7);
}

#[test]
fn postgres_migrate_enqueue_status() {
    let url = outbox_testkit::pg_url();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(pg) = runtime.block_on(outbox_testkit::pg("postgres_migrate_enqueue_status")) else {
        return;
    };
    let schema = pg.schema.to_string();

    migrate_enqueue_status(&["--database-url", &url, "--schema", &schema], 5);
    runtime.block_on(pg.drop());
}

#[test]
fn bad_input_is_refused_with_its_exit_code_and_nothing_is_written() {
    let file = SqliteFile::new();
    let url = file.url();
    let db = ["--database-url", url.as_str()];
    ok(&["migrate", db[0], db[1]]);

    let base = ["enqueue", db[0], db[1], "--key", "k", "--type", "t"];
    let big = r#"{"a": "0123456789"}"#;
    let cases: [(&[&str], &str); 4] = [
        (
            &["--stream", "orders", "--payload", "{not json"],
            "not valid json",
        ),
        (
            &[
                "--stream",
                "orders",
                "--payload",
                big,
                "--max-payload-bytes",
                "8",
            ],
            "exceeds the limit",
        ),
        (
            &[
                "--stream",
                "orders",
                "--payload",
                "{}",
                "--header",
                "novalue",
            ],
            "NAME=VALUE",
        ),
        (&["--stream", "", "--payload", "{}"], "stream is empty"),
    ];
    for (extra, message) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let out = outbox(&args);
        assert_eq!(out.status.code(), Some(65), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(pending(&db), 0);
}

#[test]
fn configuration_errors_exit_78_and_outages_69_without_the_password() {
    let out = outbox(&[
        "status",
        "--database-url",
        "postgres://a:hunter2@127.0.0.1/x",
        "--schema",
        "No;",
    ]);
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("invalid schema name"));

    let out = outbox(&["status", "--database-url", "mysql://localhost/x"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("unsupported database url scheme"));

    let out = outbox(&[
        "status",
        "--database-url",
        "postgres://app:hunter2@127.0.0.1:1/shop",
    ]);
    assert_eq!(out.status.code(), Some(69));
    let err = stderr(&out);
    assert!(
        err.contains("127.0.0.1:1/shop") && err.contains("refused"),
        "{err}"
    );
    assert!(!err.contains("hunter2"));

    let file = SqliteFile::new();
    let out = outbox(&["status", "--database-url", &file.url()]);
    assert_eq!(out.status.code(), Some(78), "an unmigrated database");
    assert!(stderr(&out).contains("outbox migrate"));
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["migrate", "enqueue", "status"] {
        let out = ok(&[sub, "--help"]);
        assert!(out.contains("--database-url"), "{sub}");
        assert!(out.contains("OUTBOX_DATABASE_URL"), "{sub}");
    }
    assert!(ok(&["--help"]).contains("migrate"));
}

#[test]
fn the_database_url_comes_from_the_environment() {
    let file = SqliteFile::new();
    let out = Command::new(env!("CARGO_BIN_EXE_outbox"))
        .args(["migrate"])
        .env("OUTBOX_DATABASE_URL", file.url())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(file.path.exists());
}
