//! The command line: every subcommand, its flags and their environment variables.

use clap::{Args, Parser, Subcommand};

/// Transactional outbox: events commit with your data and reach the broker.
#[derive(Debug, Parser)]
#[command(name = "outbox", version, propagate_version = true)]
pub struct Cli {
    /// Log filter, in `tracing` syntax (`info`, `outbox=debug,warn`).
    #[arg(long, env = "OUTBOX_LOG", default_value = "warn", global = true)]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the outbox tables, or upgrade them to this binary's version.
    ///
    /// Running it again changes nothing. A database whose outbox schema is newer
    /// than this binary is refused.
    Migrate {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Store one event in a transaction of its own.
    ///
    /// Services enqueue inside their own transactions (see docs/sql-contract.md);
    /// this is for scripts, tests and repairs.
    Enqueue(EnqueueArgs),
    /// Show pending events, the age of the oldest one, and dead letters.
    Status {
        #[command(flatten)]
        db: DatabaseArgs,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Redraw every `--interval` seconds until interrupted, with the change
        /// of the backlog per second.
        #[arg(long)]
        watch: bool,
        /// Seconds between redraws with `--watch`.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
        /// A relay's HTTP address (`http://127.0.0.1:9464`), to show what it
        /// publishes per second with `--watch`.
        #[arg(long)]
        relay: Option<String>,
    },
    /// Publish pending events until SIGINT or SIGTERM.
    ///
    /// Events of one key are published in order, each after the previous one was
    /// acknowledged; keys flow in parallel. Several relays may share a database:
    /// they split its partitions between them.
    Relay(Box<crate::relay::RelayArgs>),
    /// Publish kept events once more, from the published log.
    ///
    /// The relay keeps published events only with `--keep-published`. A replay
    /// sends each selected event again under its own id, each key in its
    /// original order, through the publisher the relay's settings name; it
    /// leaves the outbox and the relay alone.
    #[command(mut_args(crate::replay::hide_relay_only))]
    Replay(Box<crate::replay::ReplayArgs>),
    /// Look at, retry or discard events whose publication gave up.
    #[command(subcommand)]
    DeadLetters(crate::dead_letters::DeadLetterCommand),
    /// Run an order service, a relay and a check of what was published.
    ///
    /// With no arguments it needs nothing but this binary: a SQLite file and a
    /// JSON lines file in a fresh temporary directory.
    Demo(crate::demo::DemoArgs),
}

/// Where the outbox lives.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// `postgres://USER@HOST:PORT/DB` or `sqlite://PATH`.
    #[arg(long, env = "OUTBOX_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// PostgreSQL schema holding the outbox tables (ignored for SQLite).
    #[arg(long, env = "OUTBOX_SCHEMA", default_value = "outbox")]
    pub schema: String,

    /// Largest payload accepted, in bytes.
    #[arg(long, env = "OUTBOX_MAX_PAYLOAD_BYTES", default_value_t = 1024 * 1024)]
    pub max_payload_bytes: usize,
}

/// One event to store.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,

    /// Logical destination, such as `orders`.
    #[arg(long)]
    pub stream: String,

    /// Ordering key, such as `order-42`: events of one key arrive in order.
    #[arg(long)]
    pub key: String,

    /// Event type, such as `order.created`.
    #[arg(long = "type")]
    pub event_type: String,

    /// The payload, JSON unless `--content-type` says otherwise.
    #[arg(long)]
    pub payload: String,

    /// Media type of the payload.
    #[arg(long, default_value = "application/json")]
    pub content_type: String,

    /// A header as NAME=VALUE; repeatable.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,

    /// Print the assigned id and position as JSON.
    #[arg(long)]
    pub json: bool,
}
