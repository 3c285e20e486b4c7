//! Endpoint URLs and CloudEvents sources made from templates.
//!
//! A [`Template`] is text with `{stream}` and `{type}` placeholders, parsed once
//! when the publisher is built. URLs are rendered with the substitutions
//! percent-encoded, so an event type such as `order placed/v2` cannot change the
//! shape of the URL; sources are rendered as they are.

use std::fmt;

use outbox_core::{Error, ErrorKind, Result};
use reqwest::Url;

/// Text with `{stream}` and `{type}` placeholders, such as
/// `https://hooks.example/{stream}/{type}`.
///
/// `{stream}` stands for the event's outbox stream and `{type}` for its event
/// type; everything else is copied as it is. Braces are reserved for
/// placeholders: any other `{name}`, or a brace without its partner, is refused
/// when the template is parsed.
///
/// ```
/// use outbox_webhook::Template;
///
/// let url = Template::parse("http://hooks.local/{stream}/{type}")?;
/// assert_eq!(
///     url.render_url("orders", "order placed")?.as_str(),
///     "http://hooks.local/orders/order%20placed"
/// );
/// # Ok::<(), outbox_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Stream,
    Type,
}

impl Template {
    /// Parses `text`, failing with [`ErrorKind::Config`] on an unknown placeholder
    /// or an unmatched brace.
    pub fn parse(text: &str) -> Result<Template> {
        let mut parts = Vec::new();
        let mut rest = text;

        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(Error::config(format!(
                    "template {text:?} has a `}}` without a matching `{{`"
                )));
            }
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }

            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                return Err(Error::config(format!(
                    "template {text:?} has a `{{` without a matching `}}`"
                )));
            };
            parts.push(match &after[..close] {
                "stream" => Part::Stream,
                "type" => Part::Type,
                other => {
                    return Err(Error::config(format!(
                        "template {text:?} has an unknown placeholder {{{other}}}: \
                         expected {{stream}} or {{type}}"
                    )));
                }
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }

        Ok(Template {
            text: text.to_owned(),
            parts,
        })
    }

    /// The text the template was parsed from.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Replaces the placeholders with `stream` and `event_type` as they are.
    pub fn render(&self, stream: &str, event_type: &str) -> String {
        self.render_with(stream, event_type, |text, out| out.push_str(text))
    }

    /// Replaces the placeholders with `stream` and `event_type`, percent-encoded
    /// (every byte but ASCII letters, digits, `-`, `.`, `_` and `~`), and parses
    /// the result as a URL.
    ///
    /// Fails with [`ErrorKind::Permanent`] when the result is not a valid URL, which
    /// can only happen when a placeholder stands in the host, and when `stream` or
    /// `event_type` is `.` or `..`, which URL parsing would take as a step up the
    /// path.
    pub fn render_url(&self, stream: &str, event_type: &str) -> Result<Url> {
        if [stream, event_type]
            .iter()
            .any(|s| matches!(*s, "." | ".."))
        {
            return Err(Error::new(
                ErrorKind::Permanent,
                format!("stream {stream:?} or type {event_type:?} is a dot segment"),
            ));
        }
        let text = self.render_with(stream, event_type, percent_encode);
        Url::parse(&text).map_err(|e| {
            Error::new(
                ErrorKind::Permanent,
                format!(
                    "url template {:?} makes an invalid url for stream {stream:?} \
                     and type {event_type:?}",
                    self.text
                ),
            )
            .with_source(e)
        })
    }

    fn render_with(
        &self,
        stream: &str,
        event_type: &str,
        substitute: impl Fn(&str, &mut String),
    ) -> String {
        let mut out = String::with_capacity(self.text.len() + stream.len() + event_type.len());
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Stream => substitute(stream, &mut out),
                Part::Type => substitute(event_type, &mut out),
            }
        }
        out
    }
}

/// Appends `text` to `out` with every byte outside the URL's unreserved set
/// written as `%XX`.
fn percent_encode(text: &str, out: &mut String) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_message(text: &str) -> String {
        let err = Template::parse(text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{text}");
        err.to_string()
    }

    #[test]
    fn placeholders_are_replaced_and_text_is_kept() {
        let template = Template::parse("/outbox/{stream}/{type}/{stream}").unwrap();
        assert_eq!(template.render("s", "t"), "/outbox/s/t/s");

        let fixed = Template::parse("http://h/hook").unwrap();
        assert_eq!(fixed.render("s", "t"), "http://h/hook");
        assert_eq!(fixed.as_str(), "http://h/hook");
    }

    #[test]
    fn url_substitutions_are_percent_encoded() {
        let template = Template::parse("http://h:8080/in/{stream}?type={type}").unwrap();
        let url = template.render_url("orders", "a/b c?d&e=ü").unwrap();
        assert_eq!(
            url.as_str(),
            "http://h:8080/in/orders?type=a%2Fb%20c%3Fd%26e%3D%C3%BC"
        );

        let url = template.render_url("../admin", "order.placed~v1").unwrap();
        assert_eq!(url.path(), "/in/..%2Fadmin");
        assert_eq!(url.query(), Some("type=order.placed~v1"));

        for (stream, event_type) in [("..", "t"), ("s", ".")] {
            let err = template.render_url(stream, event_type).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permanent);
        }
    }

    #[test]
    fn a_placeholder_in_the_host_can_make_an_invalid_url() {
        let template = Template::parse("http://{stream}.hooks.local/").unwrap();
        assert_eq!(
            template.render_url("eu", "t").unwrap().host_str(),
            Some("eu.hooks.local")
        );

        let err = template.render_url("a b", "t").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
    }

    #[test]
    fn unknown_placeholders_and_stray_braces_are_refused() {
        assert!(config_message("http://h/{key}").contains("unknown placeholder {key}"));
        assert!(config_message("http://h/{Type}").contains("unknown placeholder {Type}"));
        assert!(config_message("http://h/{stream").contains("without a matching `}`"));
        assert!(config_message("http://h/stream}").contains("without a matching `{`"));
        assert!(config_message("{}").contains("unknown placeholder {}"));
    }
}
