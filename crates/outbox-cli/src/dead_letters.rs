//! `outbox dead-letters`: list, show, retry and discard events whose
//! publication gave up.
//!
//! Every subcommand takes the same filters. `retry` and `discard` act on the
//! event ids named, or on everything the filters select when `--all` is given,
//! so that no one empties the dead letters by forgetting an argument.

use std::time::Duration;

use clap::{Args, Subcommand};
use outbox::{DeadLetter, DeadLetterFilter, DeadLetterStore, Error, EventId, Result};
use serde_json::json;

use crate::cli::DatabaseArgs;

/// What to do with the dead letters.
#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// List dead letters, oldest position of each key first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print one JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter whole: its error, headers and payload.
    Show {
        #[command(flatten)]
        db: DatabaseArgs,
        /// The event's id.
        event_id: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back at their position in their key, to be published
    /// again before the key's later events still pending.
    Retry(ActionArgs),
    /// Delete dead letters for good.
    Discard(ActionArgs),
}

/// The filters every subcommand shares, and the database.
#[derive(Debug, Args)]
pub struct FilterArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Only events of this stream.
    #[arg(long)]
    pub stream: Option<String>,
    /// Only events of this key.
    #[arg(long)]
    pub key: Option<String>,
    /// Only those dead for longer than this, such as `90s`, `15m`, `2h`, `1d`.
    #[arg(long, value_parser = parse_age)]
    pub older_than: Option<Duration>,
    /// Only those dead for less than this.
    #[arg(long, value_parser = parse_age)]
    pub newer_than: Option<Duration>,
    /// Only those whose last error contains this text.
    #[arg(long)]
    pub error: Option<String>,
}

/// Which dead letters `retry` or `discard` act on.
#[derive(Debug, Args)]
pub struct ActionArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// The events' ids; or none, with `--all`.
    pub event_ids: Vec<String>,
    /// Act on every dead letter the filters select.
    #[arg(long)]
    pub all: bool,
    /// Print the count as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(command: DeadLetterCommand) -> Result<()> {
    match command {
        DeadLetterCommand::List {
            filter,
            limit,
            json,
        } => {
            let store = crate::commands::open_checked(&filter.db).await?;
            let letters = store
                .dead_letters(&filter.to_filter(Vec::new()), limit)
                .await?;
            for letter in &letters {
                if json {
                    println!("{}", to_json(letter, false));
                } else {
                    println!("{}", summary(letter));
                }
            }
            if !json && letters.is_empty() {
                println!("no dead letters");
            }
            Ok(())
        }
        DeadLetterCommand::Show { db, event_id, json } => {
            let store = crate::commands::open_checked(&db).await?;
            let filter = DeadLetterFilter {
                event_ids: vec![parse_id(&event_id)?],
                ..DeadLetterFilter::default()
            };
            let letter = store.dead_letters(&filter, 1).await?.pop().ok_or_else(|| {
                Error::invalid_input(format!("no dead letter has event id {event_id}"))
            })?;
            if json {
                println!("{}", to_json(&letter, true));
            } else {
                print!("{}", details(&letter));
            }
            Ok(())
        }
        DeadLetterCommand::Retry(args) => act(args, Action::Retry).await,
        DeadLetterCommand::Discard(args) => act(args, Action::Discard).await,
    }
}

#[derive(Clone, Copy)]
enum Action {
    Retry,
    Discard,
}

async fn act(args: ActionArgs, action: Action) -> Result<()> {
    let ids = args
        .event_ids
        .iter()
        .map(|id| parse_id(id))
        .collect::<Result<Vec<_>>>()?;
    if ids.is_empty() && !args.all {
        return Err(Error::invalid_input(
            "name the event ids, or pass --all to act on every dead letter the filters select",
        ));
    }
    if !ids.is_empty() && args.all {
        return Err(Error::invalid_input("pass event ids or --all, not both"));
    }

    let store = crate::commands::open_checked(&args.filter.db).await?;
    let filter = args.filter.to_filter(ids);
    let (verb, count) = match action {
        Action::Retry => ("retried", store.retry_dead_letters(&filter).await?),
        Action::Discard => ("discarded", store.discard_dead_letters(&filter).await?),
    };
    if args.json {
        println!("{}", json!({ verb: count }));
    } else {
        let plural = if count == 1 { "" } else { "s" };
        println!("{verb} {count} dead letter{plural}");
    }
    Ok(())
}

impl FilterArgs {
    fn to_filter(&self, event_ids: Vec<EventId>) -> DeadLetterFilter {
        DeadLetterFilter {
            event_ids,
            stream: self.stream.clone(),
            key: self.key.clone(),
            older_than: self.older_than,
            newer_than: self.newer_than,
            error_contains: self.error.clone(),
        }
    }
}

fn parse_id(text: &str) -> Result<EventId> {
    uuid::Uuid::parse_str(text)
        .map(EventId::from_uuid)
        .map_err(|e| Error::invalid_input(format!("{text:?} is not an event id")).with_source(e))
}

/// Parses `90s`, `15m`, `2h`, `1d` or plain seconds.
fn parse_age(text: &str) -> std::result::Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration such as 90s, 15m, 2h or 1d");
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(invalid()),
    };
    let value: f64 = number.parse().map_err(|_| invalid())?;
    if !value.is_finite() || value < 0.0 {
        return Err(invalid());
    }
    Ok(Duration::from_secs_f64(value * scale))
}

fn summary(letter: &DeadLetter) -> String {
    let e = &letter.event;
    let error: String = letter.last_error.chars().take(80).collect();
    format!(
        "{}  {}/{} #{}  {}  dead {}  {}{}",
        e.event_id,
        e.stream,
        e.key,
        e.seq,
        e.event_type,
        letter.dead_at.format("%Y-%m-%d %H:%M:%S"),
        if letter.held { "[holds key] " } else { "" },
        error
    )
}

fn details(letter: &DeadLetter) -> String {
    let e = &letter.event;
    let payload = if e.payload.is_json() {
        String::from_utf8_lossy(e.payload.as_bytes()).into_owned()
    } else {
        let size = e.payload.as_bytes().len();
        format!("({size} bytes of {})", e.payload.content_type())
    };
    format!(
        "event id:    {}\nstream:      {}\nkey:         {}\nposition:    {}\n\
         type:        {}\ncreated at:  {}\ndead at:     {}\nattempts:    {}\n\
         holds key:   {}\nlast error:  {}\nheaders:     {}\npayload:     {payload}\n",
        e.event_id,
        e.stream,
        e.key,
        e.seq,
        e.event_type,
        e.created_at.to_rfc3339(),
        letter.dead_at.to_rfc3339(),
        e.attempts,
        if letter.held { "yes" } else { "no" },
        letter.last_error,
        serde_json::to_string(&e.headers).expect("headers serialize"),
    )
}

pub(crate) fn to_json(letter: &DeadLetter, with_payload: bool) -> serde_json::Value {
    let e = &letter.event;
    let mut value = json!({
        "event_id": e.event_id,
        "stream": e.stream,
        "key": e.key,
        "seq": e.seq,
        "type": e.event_type,
        "created_at": e.created_at,
        "dead_at": letter.dead_at,
        "attempts": e.attempts,
        "held": letter.held,
        "last_error": letter.last_error,
        "headers": e.headers,
        "content_type": e.payload.content_type(),
    });
    if with_payload {
        value["payload"] = if e.payload.is_json() {
            serde_json::from_slice(e.payload.as_bytes()).unwrap_or(serde_json::Value::Null)
        } else {
            json!(String::from_utf8_lossy(e.payload.as_bytes()))
        };
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_take_units() {
        assert_eq!(parse_age("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_age("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_age("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_age("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_age("3w").is_err());
        assert!(parse_age("soon").is_err());
    }
}
