//! Topics and sources made from templates, and the rule for a valid topic name.
//!
//! The names are rendered from an [`outbox_core::Template`]. [`check_topic`] decides
//! whether the rendered text is a name Kafka accepts for a topic.

use outbox_core::{Error, ErrorKind, Result};

/// The longest topic name Kafka accepts.
pub const MAX_TOPIC_LEN: usize = 249;

/// Checks that `topic` is a name Kafka accepts for a topic.
///
/// A topic name is 1 to 249 ASCII letters, digits, `.`, `_` or `-`, and neither
/// `.` nor `..`. Anything else is refused with [`ErrorKind::Permanent`].
///
/// ```
/// use outbox_core::ErrorKind;
/// use outbox_kafka::check_topic;
///
/// check_topic("orders.v1")?;
/// let err = check_topic("orders placed").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Permanent);
/// # Ok::<(), outbox_core::Error>(())
/// ```
pub fn check_topic(topic: &str) -> Result<()> {
    match topic_problem(topic) {
        None => Ok(()),
        Some(problem) => Err(Error::new(
            ErrorKind::Permanent,
            format!("invalid kafka topic {topic:?}: {problem}"),
        )),
    }
}

/// Why `topic` cannot name a Kafka topic, or `None` when it can.
pub(crate) fn topic_problem(topic: &str) -> Option<&'static str> {
    if topic.is_empty() {
        return Some("it is empty");
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Some("it is longer than 249 bytes");
    }
    if topic == "." || topic == ".." {
        return Some("it is `.` or `..`");
    }
    if !topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Some("it has a character other than ASCII letters, digits, `.`, `_`, `-`");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_topics_pass() {
        let longest = "a".repeat(MAX_TOPIC_LEN);
        for topic in ["orders", "orders.order.placed", "T_1-a.b", "...", &longest] {
            check_topic(topic).unwrap();
        }
    }

    #[test]
    fn invalid_topics_are_permanent_failures() {
        let too_long = "a".repeat(MAX_TOPIC_LEN + 1);
        let cases = [
            ("", "empty"),
            (".", "`.`"),
            ("..", "`..`"),
            ("orders placed", "character"),
            ("orders/placed", "character"),
            ("ordres.é", "character"),
            (too_long.as_str(), "longer"),
        ];
        for (topic, problem) in cases {
            let err = check_topic(topic).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permanent, "{topic:?}");
            assert!(err.to_string().contains(problem), "{topic:?}: {err}");
        }
    }
}
