//! Request signatures in the Standard Webhooks scheme: an HMAC-SHA256 over the
//! message id, the send time and the body, keyed by a shared secret.
//!
//! [`sign`] makes the value of the `webhook-signature` header; [`verify`] checks
//! a received request, for receivers written without this crate's
//! [`crate::WebhookReceiver`]. [`WebhookSecret`] holds the key and never prints it.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use outbox_core::{Error, ErrorKind, Result};
use sha2::Sha256;

/// The header that carries the message id, the event id.
pub const WEBHOOK_ID: &str = "webhook-id";

/// The header that carries the send time, in seconds since the Unix epoch.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";

/// The header that carries the signatures, separated by spaces.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// The prefix of a secret written in the Standard Webhooks form.
pub const SECRET_PREFIX: &str = "whsec_";

/// How far a request's timestamp may be from the receiver's clock, either way,
/// unless told otherwise: five minutes.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The version tag of an HMAC-SHA256 signature.
const VERSION: &str = "v1";

type HmacSha256 = Hmac<Sha256>;

/// The key shared by a webhook's sender and receiver.
///
/// Written in the Standard Webhooks form, a secret is `whsec_` followed by the
/// standard base64 of the key; [`WebhookSecret::parse`] also takes the base64
/// without the prefix. A key that is not base64 text, such as a password chosen
/// by hand, is taken as it is by [`WebhookSecret::from_bytes`]. Keys of 24 to 64
/// random bytes are what the scheme recommends; this crate refuses only an empty
/// one.
///
/// ```
/// use outbox_webhook::WebhookSecret;
///
/// let secret: WebhookSecret = "whsec_c2VjcmV0LWtleS1vZi10aGUtdGVzdA==".parse()?;
/// assert_eq!(secret, WebhookSecret::from_bytes("secret-key-of-the-test")?);
/// assert_eq!(format!("{secret:?}"), "WebhookSecret(***)");
/// # Ok::<(), outbox_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl WebhookSecret {
    /// Reads a secret in the Standard Webhooks form, `whsec_<base64>`, or its bare
    /// base64. Fails with [`ErrorKind::Config`] when the text is not base64 or the
    /// key is empty; the error never repeats the text.
    pub fn parse(text: &str) -> Result<WebhookSecret> {
        let encoded = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .unwrap_or(text.trim());
        let key = STANDARD
            .decode(encoded)
            .map_err(|e| Error::config("webhook secret is not base64").with_source(e))?;
        WebhookSecret::from_bytes(key)
    }

    /// Takes `key` as the HMAC key as it is. Fails with [`ErrorKind::Config`] when
    /// it is empty.
    pub fn from_bytes(key: impl Into<Vec<u8>>) -> Result<WebhookSecret> {
        let key = key.into();
        if key.is_empty() {
            return Err(Error::config("webhook secret is empty"));
        }
        Ok(WebhookSecret { key })
    }

    /// The secret in the Standard Webhooks form, `whsec_<base64>`.
    pub fn to_whsec(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.key))
    }

    /// The MAC over the signed content of one message, not yet finalized.
    fn mac(&self, id: &str, timestamp: u64, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("hmac takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl FromStr for WebhookSecret {
    type Err = Error;

    fn from_str(text: &str) -> Result<WebhookSecret> {
        WebhookSecret::parse(text)
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

/// The signature of a message, as one entry of the `webhook-signature` header:
/// `v1,` and the base64 of HMAC-SHA256(secret, `{id}.{timestamp}.{body}`).
///
/// ```
/// use outbox_webhook::{WebhookSecret, sign};
///
/// let secret = WebhookSecret::from_bytes("key")?;
/// let signature = sign(&secret, "01890a5d-ac96-774b-bcce-b302099a8057", 1_700_000_000, b"{}");
/// assert!(signature.starts_with("v1,"));
/// # Ok::<(), outbox_core::Error>(())
/// ```
pub fn sign(secret: &WebhookSecret, id: &str, timestamp: u64, body: &[u8]) -> String {
    let tag = secret.mac(id, timestamp, body).finalize().into_bytes();
    format!("{VERSION},{}", STANDARD.encode(tag))
}

/// Checks that a received request was signed with `secret` within `tolerance`
/// of now.
///
/// `headers` must hold [`WEBHOOK_ID`], [`WEBHOOK_TIMESTAMP`] and
/// [`WEBHOOK_SIGNATURE`]; `body` is the request body exactly as received. The
/// request passes when its timestamp is within `tolerance` of the local clock,
/// either way, and any one of the space-separated `v1,` signatures matches, so a
/// sender rotating its key can sign with the old and the new one at once.
/// Entries of other versions are ignored. Signatures are compared in constant
/// time.
///
/// Every failure has the kind [`ErrorKind::Permanent`]: the request as it stands
/// cannot pass. Its message says which check failed and never shows a
/// signature.
///
/// The signature covers the id, the timestamp and the body only; the
/// CloudEvents attributes in the `ce-` headers are not signed (see the crate's
/// documentation).
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use http::{HeaderMap, HeaderValue};
/// use outbox_webhook::{WebhookSecret, sign, verify};
///
/// let secret = WebhookSecret::from_bytes("key")?;
/// let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
/// let mut headers = HeaderMap::new();
/// headers.insert("webhook-id", HeaderValue::from_static("msg-1"));
/// headers.insert("webhook-timestamp", now.to_string().parse().unwrap());
/// headers.insert("webhook-signature", sign(&secret, "msg-1", now, b"{}").parse().unwrap());
///
/// verify(&secret, &headers, b"{}", Duration::from_secs(300))?;
/// assert!(verify(&secret, &headers, b"{ }", Duration::from_secs(300)).is_err());
/// # Ok::<(), outbox_core::Error>(())
/// ```
pub fn verify(
    secret: &WebhookSecret,
    headers: &HeaderMap,
    body: &[u8],
    tolerance: Duration,
) -> Result<()> {
    verify_at(secret, headers, body, tolerance, unix_now())
}

/// [`verify`] against the clock reading `now`, in seconds since the Unix epoch.
fn verify_at(
    secret: &WebhookSecret,
    headers: &HeaderMap,
    body: &[u8],
    tolerance: Duration,
    now: u64,
) -> Result<()> {
    let id = header(headers, WEBHOOK_ID)?;
    let timestamp = header(headers, WEBHOOK_TIMESTAMP)?;
    let signatures = header(headers, WEBHOOK_SIGNATURE)?;

    let timestamp: u64 = timestamp.parse().map_err(|e| {
        refused(format!(
            "{WEBHOOK_TIMESTAMP} {timestamp:?} is not a unix time"
        ))
        .with_source(e)
    })?;
    let skew = now.abs_diff(timestamp);
    if skew > tolerance.as_secs() {
        return Err(refused(format!(
            "webhook timestamp is {skew} s away from now, beyond the tolerance of {} s",
            tolerance.as_secs()
        )));
    }

    let expected = secret.mac(id, timestamp, body);
    let matched = signatures
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .any(|tag| expected.clone().verify_slice(&tag).is_ok());
    if matched {
        Ok(())
    } else {
        Err(refused(
            "no webhook signature matches the secret".to_owned(),
        ))
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str> {
    let value = headers
        .get(name)
        .ok_or_else(|| refused(format!("request has no {name} header")))?;
    value
        .to_str()
        .map_err(|e| refused(format!("{name} header is not visible ascii")).with_source(e))
}

fn refused(message: String) -> Error {
    Error::new(ErrorKind::Permanent, message)
}

/// The local clock in whole seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const NOW: u64 = 1_750_000_000;
    const TOLERANCE: Duration = Duration::from_secs(300);

    fn secret() -> WebhookSecret {
        WebhookSecret::from_bytes("the shared key of these tests").unwrap()
    }

    fn signed(secret: &WebhookSecret, id: &str, timestamp: u64, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(WEBHOOK_ID, HeaderValue::from_str(id).unwrap());
        headers.insert(WEBHOOK_TIMESTAMP, timestamp.into());
        let signature = sign(secret, id, timestamp, body);
        headers.insert(
            WEBHOOK_SIGNATURE,
            HeaderValue::from_str(&signature).unwrap(),
        );
        headers
    }

    fn refusal(headers: &HeaderMap, body: &[u8]) -> String {
        let err = verify_at(&secret(), headers, body, TOLERANCE, NOW).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
        err.to_string()
    }

    #[test]
    fn the_published_example_of_the_scheme_verifies() {
        // The worked example of the Standard Webhooks specification.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let signature = sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");

        let headers = signed(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        verify_at(&secret, &headers, body, TOLERANCE, 1614265330).unwrap();
    }

    #[test]
    fn a_signed_request_verifies_with_the_shared_secret() {
        let headers = signed(&secret(), "evt-1", NOW, b"{\"n\":1}");
        verify_at(&secret(), &headers, b"{\"n\":1}", TOLERANCE, NOW).unwrap();
        verify_at(&secret(), &headers, b"{\"n\":1}", TOLERANCE, NOW + 300).unwrap();
    }

    #[test]
    fn a_wrong_secret_fails() {
        let other = WebhookSecret::from_bytes("another key").unwrap();
        let headers = signed(&other, "evt-1", NOW, b"{}");
        assert!(refusal(&headers, b"{}").contains("no webhook signature matches"));
    }

    #[test]
    fn a_tampered_body_or_id_fails() {
        let headers = signed(&secret(), "evt-1", NOW, b"{\"total\":10}");
        assert!(refusal(&headers, b"{\"total\":99}").contains("no webhook signature"));

        let mut moved = headers.clone();
        moved.insert(WEBHOOK_ID, HeaderValue::from_static("evt-2"));
        assert!(refusal(&moved, b"{\"total\":10}").contains("no webhook signature"));

        let mut later = headers;
        later.insert(WEBHOOK_TIMESTAMP, (NOW + 1).into());
        assert!(refusal(&later, b"{\"total\":10}").contains("no webhook signature"));
    }

    #[test]
    fn an_old_or_future_timestamp_fails() {
        let old = signed(&secret(), "evt-1", NOW - 301, b"{}");
        assert!(refusal(&old, b"{}").contains("301 s away"));

        let future = signed(&secret(), "evt-1", NOW + 301, b"{}");
        assert!(refusal(&future, b"{}").contains("beyond the tolerance"));
    }

    #[test]
    fn any_one_of_several_signatures_may_match() {
        let old_key = WebhookSecret::from_bytes("old key").unwrap();
        let mut headers = signed(&secret(), "evt-1", NOW, b"{}");
        let current = headers[WEBHOOK_SIGNATURE].to_str().unwrap().to_owned();
        let rotated = format!(
            "v1a,c29tZXRoaW5nIGVsc2U= {} v1,not-base64! {current}",
            sign(&old_key, "evt-1", NOW, b"{}")
        );
        headers.insert(WEBHOOK_SIGNATURE, HeaderValue::from_str(&rotated).unwrap());
        verify_at(&secret(), &headers, b"{}", TOLERANCE, NOW).unwrap();

        let only_old = sign(&old_key, "evt-1", NOW, b"{}");
        headers.insert(WEBHOOK_SIGNATURE, HeaderValue::from_str(&only_old).unwrap());
        refusal(&headers, b"{}");
    }

    #[test]
    fn missing_or_garbled_headers_fail() {
        let headers = signed(&secret(), "evt-1", NOW, b"{}");
        for name in [WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE] {
            let mut partial = headers.clone();
            partial.remove(name);
            assert!(refusal(&partial, b"{}").contains(name), "{name}");
        }

        let mut garbled = headers;
        garbled.insert(WEBHOOK_TIMESTAMP, HeaderValue::from_static("yesterday"));
        assert!(refusal(&garbled, b"{}").contains("not a unix time"));
    }

    #[test]
    fn secrets_read_the_standard_form_and_stay_hidden() {
        let secret = WebhookSecret::parse("whsec_a2V5").unwrap();
        assert_eq!(secret, WebhookSecret::from_bytes("key").unwrap());
        assert_eq!(WebhookSecret::parse("a2V5").unwrap(), secret);
        assert_eq!(secret.to_whsec(), "whsec_a2V5");
        assert_eq!(format!("{secret:?}"), "WebhookSecret(***)");

        for bad in ["whsec_not base64!", "whsec_", ""] {
            let err = WebhookSecret::parse(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad:?}");
            assert!(!err.chain().contains("not base64!"), "{}", err.chain());
        }
    }
}
