//! The client side of `WS /api/v1/watch` and `WS /api/v1/jobs/{id}/watch`:
//! events one at a time, in sequence order, resuming after `since`.

use crate::{Client, ClientError, Result};
use futures_util::StreamExt;
use george_core::api::EventView;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An open watch stream.
#[derive(Debug)]
pub struct Watch {
    socket: Socket,
    /// The sequence number of the last event returned.
    pub last: Option<i64>,
}

impl Client {
    /// Opens a watch stream: every event after `since` (only new ones when
    /// `None`), of one job or of all.
    pub async fn watch(&self, job: Option<&str>, since: Option<i64>) -> Result<Watch> {
        let ws_base = self.base().replacen("http", "ws", 1);
        let mut url = match job {
            Some(j) => format!("{ws_base}/api/v1/jobs/{j}/watch"),
            None => format!("{ws_base}/api/v1/watch"),
        };
        if let Some(s) = since {
            url.push_str(&format!("?since={s}"));
        }
        let unreachable = |message: String| ClientError::Unreachable { url: self.base().to_string(), message };
        let mut request = url.as_str().into_client_request().map_err(|e| unreachable(e.to_string()))?;
        let bearer = HeaderValue::from_str(&format!("Bearer {}", self.token))
            .map_err(|_| ClientError::Decode("the token is not a valid header value".into()))?;
        request.headers_mut().insert("authorization", bearer);
        let (socket, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(resp) => {
                let status = resp.status().as_u16();
                let body = resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().to_string();
                match serde_json::from_str::<george_core::api::ErrorBody>(&body) {
                    Ok(b) => ClientError::Api {
                        status,
                        code: b.error.code,
                        message: b.error.message,
                        details: b.error.details,
                        retry_after: None,
                    },
                    Err(_) => ClientError::Api {
                        status,
                        code: "watch_refused".into(),
                        message: body,
                        details: vec![],
                        retry_after: None,
                    },
                }
            }
            other => unreachable(other.to_string()),
        })?;
        Ok(Watch { socket, last: since })
    }
}

impl Watch {
    /// The next event; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<EventView>> {
        while let Some(msg) = self.socket.next().await {
            match msg.map_err(|e| ClientError::Decode(format!("watch stream: {e}")))? {
                Message::Text(text) => {
                    let e: EventView = serde_json::from_str(&text)
                        .map_err(|e| ClientError::Decode(format!("watch stream: bad event: {e}")))?;
                    self.last = Some(e.seq);
                    return Ok(Some(e));
                }
                Message::Close(_) => return Ok(None),
                _ => {}
            }
        }
        Ok(None)
    }

    /// Closes the stream.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
