//! What each subcommand does, in terms of the store.

use outbox::{AnyStore, Error, Identifier, Limits, NewEvent, OutboxStore, Payload, Result};
use outbox::{Status, StoreOptions};

use crate::cli::{Command, DatabaseArgs, EnqueueArgs};

pub async fn run(command: Command) -> Result<()> {
    match command {
        Command::Migrate { db } => migrate(&db).await,
        Command::Enqueue(args) => enqueue(args).await,
        Command::Status {
            db,
            json,
            watch: true,
            interval,
            relay,
        } => crate::watch::run(&db, json, interval, relay.as_deref()).await,
        Command::Status { db, json, .. } => status(&db, json).await,
        Command::Relay(args) => crate::relay::run(*args).await,
        Command::Replay(args) => crate::replay::run(*args).await,
        Command::DeadLetters(command) => crate::dead_letters::run(command).await,
        Command::Demo(args) => crate::demo::run(args).await,
    }
}

async fn open(db: &DatabaseArgs) -> Result<AnyStore> {
    let options = StoreOptions {
        schema: Identifier::new(&db.schema)?,
        limits: Limits {
            max_payload_bytes: db.max_payload_bytes,
            ..Limits::default()
        },
    };
    AnyStore::connect(&db.database_url, options).await
}

/// Opens the store and checks that its schema is this binary's.
pub async fn open_checked(db: &DatabaseArgs) -> Result<AnyStore> {
    let store = open(db).await?;
    store.check_schema().await?;
    Ok(store)
}

async fn migrate(db: &DatabaseArgs) -> Result<()> {
    let store = open(db).await?;
    let (applied, version) = store.migrate().await?;
    if applied.is_empty() {
        println!("outbox schema already at version {version}; nothing to do");
    } else {
        let list: Vec<String> = applied.iter().map(i64::to_string).collect();
        println!(
            "applied migrations {}; outbox schema at version {version}",
            list.join(", ")
        );
    }
    Ok(())
}

async fn enqueue(args: EnqueueArgs) -> Result<()> {
    // Build and validate the event before touching the database.
    let mut event = NewEvent::new(
        args.stream,
        args.key,
        args.event_type,
        Payload::bytes(args.content_type, args.payload.into_bytes()),
    );
    for header in &args.headers {
        let (name, value) = header.split_once('=').ok_or_else(|| {
            Error::invalid_input(format!("header {header:?} is not of the form NAME=VALUE"))
        })?;
        event = event.with_header(name, value);
    }
    let limits = Limits {
        max_payload_bytes: args.db.max_payload_bytes,
        ..Limits::default()
    };
    event.validate(&limits)?;

    let store = open(&args.db).await?;
    store.check_schema().await?;
    let enqueued = store.enqueue_alone(&[event]).await?;
    let e = enqueued[0];
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&e).expect("plain struct serializes")
        );
    } else {
        println!("enqueued event {} at position {}", e.event_id, e.seq);
    }
    Ok(())
}

async fn status(db: &DatabaseArgs, json: bool) -> Result<()> {
    let store = open(db).await?;
    store.check_schema().await?;
    let status = store.status().await?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&status).expect("plain struct serializes")
        );
    } else {
        print!("{}", render(&status));
    }
    Ok(())
}

pub fn render(status: &Status) -> String {
    let age = match status.oldest_pending_age {
        Some(age) => format!("{:.1} s", age.as_secs_f64()),
        None => "-".to_owned(),
    };
    format!(
        "pending events:      {}\n\
         oldest pending age:  {age}\n\
         dead letters:        {}\n\
         schema version:      {}\n",
        status.pending, status.dead_lettered, status.schema_version
    )
}
