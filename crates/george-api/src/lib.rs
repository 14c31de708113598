//! George API: REST v1, auth and metrics over axum
