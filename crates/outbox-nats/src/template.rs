//! The rule for a valid subject, and the subject filter of a stream.
//!
//! Subjects and sources come from an [`outbox_core::Template`]. [`check_subject`]
//! decides whether the rendered text is a subject JetStream can store a message
//! under.

use outbox_core::{Error, ErrorKind, Result, Template};

/// A subject filter that covers every subject `template` yields for `stream`, or
/// `None` when the subjects of one stream cannot be told apart by a prefix.
///
/// The filter is the rendered text before the first `{type}`, cut back to the
/// last complete token, followed by `>`. A template without `{type}` yields one
/// subject per stream, which is its own filter.
pub(crate) fn subject_filter(template: &Template, stream: &str) -> Option<String> {
    let Some(before) = template.rendered_before_type(stream) else {
        return Some(template.render(stream, ""));
    };
    let cut = before.rfind('.')?;
    Some(format!("{}>", &before[..=cut]))
}

/// Checks that `subject` is one JetStream can store a message under.
///
/// A subject is one or more tokens separated by `.`. It is refused, with
/// [`ErrorKind::Permanent`], when a token is empty (`orders..placed`, a leading or
/// trailing `.`), when it contains whitespace or a control character, or when it
/// contains a wildcard (`*` or `>`), which a published subject cannot carry.
///
/// ```
/// use outbox_core::ErrorKind;
/// use outbox_nats::check_subject;
///
/// check_subject("orders.order.placed")?;
/// let err = check_subject("orders.*").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Permanent);
/// # Ok::<(), outbox_core::Error>(())
/// ```
pub fn check_subject(subject: &str) -> Result<()> {
    match subject_problem(subject) {
        None => Ok(()),
        Some(problem) => Err(Error::new(
            ErrorKind::Permanent,
            format!("invalid subject {subject:?}: {problem}"),
        )),
    }
}

/// Why `subject` cannot be published to, or `None` when it can.
pub(crate) fn subject_problem(subject: &str) -> Option<&'static str> {
    if subject.is_empty() {
        return Some("it is empty");
    }
    if subject.split('.').any(str::is_empty) {
        return Some("it has an empty token");
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("it contains whitespace or a control character");
    }
    if subject.contains(['*', '>']) {
        return Some("it contains a wildcard");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_cover_the_subjects_of_one_stream() {
        let filter =
            |text: &str, stream: &str| subject_filter(&Template::parse(text).unwrap(), stream);

        assert_eq!(
            filter("{stream}.{type}", "orders").as_deref(),
            Some("orders.>")
        );
        assert_eq!(
            filter("shop.{stream}.v1-{type}", "orders").as_deref(),
            Some("shop.orders.>")
        );
        assert_eq!(
            filter("{stream}.all", "orders").as_deref(),
            Some("orders.all")
        );
        assert_eq!(filter("{type}.{stream}", "orders"), None);
        assert_eq!(filter("{stream}{type}", "orders"), None);
    }

    #[test]
    fn valid_subjects_pass() {
        for subject in ["orders", "orders.order.placed", "T_1.a-b.c_d", "ordres.é"] {
            check_subject(subject).unwrap();
        }
    }

    #[test]
    fn invalid_subjects_are_permanent_failures() {
        let cases = [
            ("", "empty"),
            ("orders..placed", "empty token"),
            (".orders", "empty token"),
            ("orders.", "empty token"),
            ("orders.order placed", "whitespace"),
            ("orders.order\tplaced", "whitespace"),
            ("orders.\u{7}", "control character"),
            ("orders.*", "wildcard"),
            ("orders.>", "wildcard"),
            ("orders.a*b", "wildcard"),
        ];
        for (subject, problem) in cases {
            let err = check_subject(subject).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permanent, "{subject:?}");
            assert!(err.to_string().contains(problem), "{subject:?}: {err}");
        }
    }
}
