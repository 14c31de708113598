//! JSON request bodies with George's error format: a malformed body is a 400
//! that says what is wrong and where, never axum's plain-text rejection.

use crate::ApiError;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::Json;
use serde::de::DeserializeOwned;

/// A JSON body of type `T`.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, crate::MAX_BODY_BYTES).await.map_err(|_| {
            ApiError::TooLarge(format!("request body is over the {} byte limit", crate::MAX_BODY_BYTES))
        })?;
        object_only(&bytes)?;
        let req = Request::from_parts(parts, axum::body::Body::from(bytes.clone()));
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rej) => {
                if rej.status() == StatusCode::UNPROCESSABLE_ENTITY {
                    if let Some(retried) = integral(&bytes) {
                        return retried.map(Body).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")));
                    }
                }
                let text = rej.body_text();
                Err(match rej.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => {
                        ApiError::TooLarge(format!("request body is over the {} byte limit", crate::MAX_BODY_BYTES))
                    }
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(
                        "send the body as JSON with `Content-Type: application/json`".into(),
                    ),
                    _ => ApiError::invalid(format!(
                        "invalid JSON body: {}",
                        text.trim_start_matches("Failed to deserialize the JSON body into the target type: ")
                    )),
                })
            }
        }
    }
}

/// The body read again with every integral number written as a float
/// (`3.0`, `1e3`) taken as the integer it is — JSON Schema's `integer`
/// includes them. `None` when it has no such number (the first reading's
/// error stands); else the second reading, its error naming the field.
fn integral<T: DeserializeOwned>(bytes: &[u8]) -> Option<Result<T, String>> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    integral_numbers(&mut v).then(|| serde_path_to_error::deserialize(v).map_err(|e| e.to_string()))
}

/// Rewrites integral floats as integers; whether there were any.
fn integral_numbers(v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            let whole = f.fract() == 0.0;
            if whole && f >= 0.0 && f < u64::MAX as f64 {
                *v = Value::from(f as u64);
                true
            } else if whole && f < 0.0 && f >= i64::MIN as f64 {
                *v = Value::from(f as i64);
                true
            } else {
                false
            }
        }
        Value::Array(items) => items.iter_mut().fold(false, |any, i| integral_numbers(i) | any),
        Value::Object(map) => map.values_mut().fold(false, |any, i| integral_numbers(i) | any),
        _ => false,
    }
}

/// Every request body is a JSON object (serde would also take a struct as an array).
fn object_only(bytes: &[u8]) -> Result<(), ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        _ => Err(ApiError::invalid("invalid JSON body: expected a JSON object `{…}`")),
    }
}

/// A JSON body that may be empty (then `T::default()`).
#[derive(Debug)]
pub struct OptionalBody<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|_| {
            ApiError::TooLarge(format!("request body is over the {} byte limit", crate::MAX_BODY_BYTES))
        })?;
        if bytes.is_empty() {
            return Ok(OptionalBody(T::default()));
        }
        object_only(&bytes)?;
        let first = serde_json::from_slice(&bytes).map_err(|e| e.to_string());
        first
            .or_else(|e| integral(&bytes).unwrap_or(Err(e)))
            .map(OptionalBody)
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
    }
}

/// Query-string parameters of type `T`, with George's error format.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(QueryParams(v)),
            Err(rej) => Err(ApiError::invalid(format!(
                "invalid query string: {}",
                rej.body_text().trim_start_matches("Failed to deserialize query string: ")
            ))),
        }
    }
}
