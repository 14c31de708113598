//! A notification receiver for tests: a Slack-compatible incoming webhook
//! that keeps every JSON body posted to it.

#![allow(dead_code)]

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// The running receiver.
pub struct Inbox {
    pub url: String,
    messages: Arc<Mutex<Vec<Value>>>,
}

impl Inbox {
    pub fn start() -> Self {
        let messages = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().route("/hooks/alerts", post(receive)).with_state(messages.clone());
        let addr = serve_in_background(app);
        Self { url: format!("http://{addr}/hooks/alerts"), messages }
    }

    /// Every body received so far.
    pub fn messages(&self) -> Vec<Value> {
        self.messages.lock().unwrap().clone()
    }
}

async fn receive(State(m): State<Arc<Mutex<Vec<Value>>>>, Json(body): Json<Value>) -> &'static str {
    m.lock().unwrap().push(body);
    "ok"
}

/// Serves `app` on a loopback port from a thread of its own.
pub fn serve_in_background(app: Router) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}
