//! The relay's admin API: the dead letters over HTTP, as `outbox dead-letters`
//! offers them on the command line.
//!
//! | route | does |
//! | --- | --- |
//! | `GET /api/dead-letters?stream=&key=&error=&limit=` | lists dead letters as JSON |
//! | `POST /api/dead-letters/{event_id}/retry` | puts one back at its position |
//! | `POST /api/dead-letters/{event_id}/discard` | deletes one |
//! | `GET /api/status` | the backlog, as `outbox status --json` prints it |
//!
//! When a token is configured, every route here asks for `Authorization: Bearer
//! <token>`. The status page itself, `/metrics`, the health checks and
//! `/api/relay` (counters only) stay open, like a metrics port. The HTTP
//! endpoints refuse to listen on a non-loopback address without one (see
//! [`check_exposure`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use outbox::{AnyStore, DeadLetterFilter, DeadLetterStore, Error, EventId, OutboxStore, Result};
use serde_json::json;

/// What the admin routes need.
#[derive(Clone)]
struct Admin {
    store: AnyStore,
    token: Option<Arc<str>>,
}

/// Refuses to expose the admin API beyond this machine without a token.
pub fn check_exposure(listen: SocketAddr, token: Option<&str>) -> Result<()> {
    if !listen.ip().is_loopback() && token.is_none_or(str::is_empty) {
        return Err(Error::config(format!(
            "refusing to serve the admin api on {listen} without a token: \
             set --admin-token, or listen on 127.0.0.1"
        )));
    }
    Ok(())
}

/// The admin routes over `store`, guarded by `token` when there is one.
pub fn router(store: AnyStore, token: Option<String>) -> Router {
    let admin = Admin {
        store,
        token: token.filter(|t| !t.is_empty()).map(Arc::from),
    };
    Router::new()
        .route("/api/status", get(status))
        .route("/api/dead-letters", get(list))
        .route("/api/dead-letters/{event_id}/retry", post(retry))
        .route("/api/dead-letters/{event_id}/discard", post(discard))
        .with_state(admin)
}

impl Admin {
    /// Whether the request carries the token, or none is needed.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Equal lengths first, then every byte, so timing says little.
        given.is_some_and(|given| {
            given.len() == token.len()
                && given
                    .bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        })
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "a valid bearer token is required\n",
    )
        .into_response()
}

fn failure(err: &Error) -> Response {
    let code = match err.kind() {
        outbox::ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        outbox::ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, axum::Json(json!({ "error": err.chain() }))).into_response()
}

async fn status(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if !admin.authorized(&headers) {
        return unauthorized();
    }
    match admin.store.status().await {
        Ok(status) => axum::Json(status).into_response(),
        Err(err) => failure(&err),
    }
}

async fn list(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if !admin.authorized(&headers) {
        return unauthorized();
    }
    let filter = DeadLetterFilter {
        stream: params.get("stream").cloned(),
        key: params.get("key").cloned(),
        error_contains: params.get("error").cloned(),
        ..DeadLetterFilter::default()
    };
    let limit = params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100);
    match admin.store.dead_letters(&filter, limit).await {
        Ok(letters) => {
            let items: Vec<_> = letters
                .iter()
                .map(|letter| crate::dead_letters::to_json(letter, false))
                .collect();
            axum::Json(items).into_response()
        }
        Err(err) => failure(&err),
    }
}

async fn retry(state: State<Admin>, headers: HeaderMap, id: Path<String>) -> Response {
    act(state, headers, id, true).await
}

async fn discard(state: State<Admin>, headers: HeaderMap, id: Path<String>) -> Response {
    act(state, headers, id, false).await
}

async fn act(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(event_id): Path<String>,
    retry: bool,
) -> Response {
    if !admin.authorized(&headers) {
        return unauthorized();
    }
    let Ok(uuid) = uuid::Uuid::parse_str(&event_id) else {
        return failure(&Error::invalid_input(format!(
            "{event_id:?} is not an event id"
        )));
    };
    let filter = DeadLetterFilter {
        event_ids: vec![EventId::from_uuid(uuid)],
        ..DeadLetterFilter::default()
    };
    let done = if retry {
        admin.store.retry_dead_letters(&filter).await
    } else {
        admin.store.discard_dead_letters(&filter).await
    };
    match done {
        Ok(0) => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": "no dead letter has that event id" })),
        )
            .into_response(),
        Ok(n) => {
            axum::Json(json!({ if retry { "retried" } else { "discarded" }: n })).into_response()
        }
        Err(err) => failure(&err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_may_go_without_a_token() {
        let local: SocketAddr = "127.0.0.1:9464".parse().unwrap();
        let open: SocketAddr = "0.0.0.0:9464".parse().unwrap();
        check_exposure(local, None).unwrap();
        check_exposure(open, Some("s3cret")).unwrap();
        let err = check_exposure(open, None).unwrap_err();
        assert_eq!(err.kind(), outbox::ErrorKind::Config);
        assert!(check_exposure(open, Some("")).is_err());
    }
}
