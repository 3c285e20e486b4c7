//! Endpoint URLs made from templates.
//!
//! The endpoint is an [`outbox_core::Template`] rendered by [`render_url`], with
//! the substitutions percent-encoded, so an event type such as `order placed/v2`
//! cannot change the shape of the URL; sources are rendered as they are.

use outbox_core::{Error, ErrorKind, Result, Template};
use reqwest::Url;

/// Renders `template` with `stream` and `event_type` percent-encoded (every byte
/// but ASCII letters, digits, `-`, `.`, `_` and `~`), and parses the result as a
/// URL.
///
/// Fails with [`ErrorKind::Permanent`] when the result is not a valid URL, which
/// can only happen when a placeholder stands in the host, and when `stream` or
/// `event_type` is `.` or `..`, which URL parsing would take as a step up the
/// path.
///
/// ```
/// use outbox_webhook::{Template, render_url};
///
/// let url = Template::parse("http://hooks.local/{stream}/{type}")?;
/// assert_eq!(
///     render_url(&url, "orders", "order placed")?.as_str(),
///     "http://hooks.local/orders/order%20placed"
/// );
/// # Ok::<(), outbox_core::Error>(())
/// ```
pub fn render_url(template: &Template, stream: &str, event_type: &str) -> Result<Url> {
    if [stream, event_type]
        .iter()
        .any(|s| matches!(*s, "." | ".."))
    {
        return Err(Error::new(
            ErrorKind::Permanent,
            format!("stream {stream:?} or type {event_type:?} is a dot segment"),
        ));
    }
    let text = template.render_with(stream, event_type, percent_encode);
    Url::parse(&text).map_err(|e| {
        Error::new(
            ErrorKind::Permanent,
            format!(
                "url template {:?} makes an invalid url for stream {stream:?} \
                 and type {event_type:?}",
                template.as_str()
            ),
        )
        .with_source(e)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_substitutions_are_percent_encoded() {
        let template = Template::parse("http://h:8080/in/{stream}?type={type}").unwrap();
        let url = render_url(&template, "orders", "a/b c?d&e=ü").unwrap();
        assert_eq!(
            url.as_str(),
            "http://h:8080/in/orders?type=a%2Fb%20c%3Fd%26e%3D%C3%BC"
        );

        let url = render_url(&template, "../admin", "order.placed~v1").unwrap();
        assert_eq!(url.path(), "/in/..%2Fadmin");
        assert_eq!(url.query(), Some("type=order.placed~v1"));

        for (stream, event_type) in [("..", "t"), ("s", ".")] {
            let err = render_url(&template, stream, event_type).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permanent);
        }
    }

    #[test]
    fn a_placeholder_in_the_host_can_make_an_invalid_url() {
        let template = Template::parse("http://{stream}.hooks.local/").unwrap();
        assert_eq!(
            render_url(&template, "eu", "t").unwrap().host_str(),
            Some("eu.hooks.local")
        );

        let err = render_url(&template, "a b", "t").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
    }
}
