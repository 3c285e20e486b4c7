//! Exchange names, routing keys and sources made from templates, and the rules
//! for names RabbitMQ accepts.
//!
//! The names are rendered from an [`outbox_core::Template`]; [`check_exchange`]
//! and [`check_routing_key`] decide whether the rendered text can be sent.

use outbox_core::{Error, ErrorKind, Result};

/// The longest exchange name or routing key AMQP 0-9-1 can carry, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 255;

/// Checks that `exchange` is a name RabbitMQ accepts for an exchange.
///
/// A name has at most 255 bytes of ASCII letters, digits, `-`, `_`, `.` and `:`,
/// the characters RabbitMQ allows when it declares one. The empty name is the
/// default exchange, which routes by queue name. Anything else fails with
/// [`ErrorKind::Permanent`].
///
/// ```
/// use outbox_core::ErrorKind;
/// use outbox_rabbitmq::check_exchange;
///
/// check_exchange("outbox")?;
/// assert_eq!(check_exchange("out box").unwrap_err().kind(), ErrorKind::Permanent);
/// # Ok::<(), outbox_core::Error>(())
/// ```
pub fn check_exchange(exchange: &str) -> Result<()> {
    match exchange_problem(exchange) {
        None => Ok(()),
        Some(problem) => Err(Error::new(
            ErrorKind::Permanent,
            format!("invalid exchange name {exchange:?}: {problem}"),
        )),
    }
}

/// Checks that `routing_key` fits in AMQP: at most 255 bytes. A longer one fails
/// with [`ErrorKind::Permanent`].
pub fn check_routing_key(routing_key: &str) -> Result<()> {
    if routing_key.len() > MAX_NAME_BYTES {
        return Err(Error::new(
            ErrorKind::Permanent,
            format!(
                "routing key of {} bytes exceeds the limit of {MAX_NAME_BYTES} bytes",
                routing_key.len()
            ),
        ));
    }
    Ok(())
}

/// Why `exchange` cannot be an exchange name, or `None` when it can.
pub(crate) fn exchange_problem(exchange: &str) -> Option<&'static str> {
    if exchange.len() > MAX_NAME_BYTES {
        return Some("it is longer than 255 bytes");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if !exchange.chars().all(allowed) {
        return Some("expected ASCII letters, digits, `-`, `_`, `.` or `:`");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_names_follow_rabbitmq_rules() {
        for name in ["", "outbox", "shop.orders", "a-b_c:d", "amq.topic"] {
            check_exchange(name).unwrap();
        }
        for name in ["out box", "orders/placed", "é", &"x".repeat(256)] {
            let err = check_exchange(name).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permanent, "{name:?}");
        }
    }

    #[test]
    fn routing_keys_are_bounded_by_length_only() {
        check_routing_key("orders.order placed/é").unwrap();
        check_routing_key(&"k".repeat(255)).unwrap();
        let err = check_routing_key(&"k".repeat(256)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
    }
}
