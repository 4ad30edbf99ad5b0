//! The live view's web page and its JSON: `GET /` (the page), `GET /api/live` (the feed's
//! snapshot) and `GET /api/user/{id}` (one user as `inspect user` shows them). The page is
//! plain HTML, CSS and JavaScript compiled into the binary: no build step, nothing fetched
//! from elsewhere; charts are inline SVG drawn by the page's script.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::feed::LiveFeed;

const PAGE: &str = include_str!("page.html");
const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

/// Looks one user up for `/api/user/{id}`: the JSON of their report, `None` when the state
/// store holds nothing for them.
pub(crate) trait UserLookup: Send + Sync + 'static {
    fn user_json(&self, id: &str) -> impl Future<Output = anyhow::Result<Option<String>>> + Send;
}

struct Web<U> {
    feed: LiveFeed,
    users: U,
}

/// The page and its API; merge it with the telemetry router to serve both on one listener.
pub(crate) fn router<U: UserLookup>(feed: LiveFeed, users: U) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/live.css", get(style))
        .route("/live.js", get(script))
        .route("/api/live", get(live))
        .route("/api/user/{id}", get(user::<U>))
        .with_state(Arc::new(Web { feed, users }))
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    json(status, serde_json::json!({ "error": message }).to_string())
}

async fn live<U: UserLookup>(State(web): State<Arc<Web<U>>>) -> Response {
    let snapshot = web.feed.snapshot();
    match serde_json::to_string(&snapshot) {
        Ok(body) => json(StatusCode::OK, body),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn user<U: UserLookup>(State(web): State<Arc<Web<U>>>, Path(id): Path<String>) -> Response {
    match web.users.user_json(&id).await {
        Ok(Some(body)) => json(StatusCode::OK, body),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            &format!("no state for user {id:?}: never seen, expired or forgotten"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tierflow_events::EventTime;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct OneUser;

    impl UserLookup for OneUser {
        async fn user_json(&self, id: &str) -> anyhow::Result<Option<String>> {
            match id {
                "u1" => Ok(Some(r#"{"user_id":"u1"}"#.to_owned())),
                "broken" => anyhow::bail!("redis is down"),
                _ => Ok(None),
            }
        }
    }

    /// One HTTP/1.1 GET on a fresh connection: the status line, headers and body as text.
    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_the_page_the_snapshot_and_users() {
        let feed = LiveFeed::new("test", EventTime::from_unix_millis(0));
        feed.lock()
            .tier_changed(&super::super::feed::tests::change("u1", Some(1), 2, "k1"));
        let (addr, server) = tierflow_pipeline::telemetry::serve(
            "127.0.0.1:0".parse().unwrap(),
            router(feed, OneUser),
        )
        .await
        .unwrap();

        let page = get(addr, "/").await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("text/html"), "{page}");
        assert!(page.contains("live.js"), "{page}");
        for asset in ["/live.js", "/live.css"] {
            let response = get(addr, asset).await;
            assert!(response.starts_with("HTTP/1.1 200"), "{asset}: {response}");
        }

        let live = get(addr, "/api/live").await;
        assert!(live.starts_with("HTTP/1.1 200"), "{live}");
        let body = live.split("\r\n\r\n").nth(1).unwrap();
        let snapshot: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(snapshot["flow"][0]["from"], 1);
        assert_eq!(snapshot["flow"][0]["to"], 2);
        assert_eq!(snapshot["flow"][0]["users"], 1);
        assert_eq!(snapshot["latest_tier_changes"][0]["user_id"], "u1");

        let user = get(addr, "/api/user/u1").await;
        assert!(user.starts_with("HTTP/1.1 200"), "{user}");
        assert!(user.ends_with(r#"{"user_id":"u1"}"#), "{user}");
        let missing = get(addr, "/api/user/nobody").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        assert!(
            missing.contains(r#""error":"no state for user \"nobody\""#),
            "{missing}"
        );
        let broken = get(addr, "/api/user/broken").await;
        assert!(broken.starts_with("HTTP/1.1 500"), "{broken}");
        assert!(broken.contains("redis is down"), "{broken}");
        server.abort();
    }
}
