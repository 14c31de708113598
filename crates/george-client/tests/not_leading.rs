//! A call answered `503 not_leading` (a standby replica behind a load
//! balancer, which did nothing) is sent again until a replica that leads
//! answers; other errors are not retried.

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use george_client::{Client, ClientError};
use serde_json::json;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// A server answering `standby_answers` calls with `status`/`code`, then 201.
async fn server(standby_answers: u32, status: StatusCode, code: &'static str) -> (String, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let app = Router::new().route(
        "/api/v1/summon",
        post(move || {
            let seen = seen.clone();
            async move {
                if seen.fetch_add(1, Ordering::SeqCst) < standby_answers {
                    let body = json!({"error": {"code": code, "message": "this replica does not lead"}});
                    (status, [(header::RETRY_AFTER, "1"), (header::CONNECTION, "close")], axum::Json(body))
                        .into_response()
                } else {
                    (StatusCode::CREATED, axum::Json(json!({"trigger": "t", "job": "j1", "debounced": false})))
                        .into_response()
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

#[tokio::test]
async fn not_leading_is_retried_until_the_leader_answers_and_nothing_else_is() {
    let (url, calls) = server(2, StatusCode::SERVICE_UNAVAILABLE, "not_leading").await;
    let client = Client::new(&url, "token-0123456789abcdef").unwrap();
    let fired = client.summon(&json!({"agent": "worker"})).await.unwrap();
    assert_eq!(fired["job"], "j1");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "two standby answers, then the leader's");

    let (url, calls) = server(1, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    let client = Client::new(&url, "token-0123456789abcdef").unwrap();
    let err = client.summon(&json!({"agent": "worker"})).await.unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 503, .. }), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "other errors are not retried");
}
