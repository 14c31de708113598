//! The engine's integration tests, in one binary: budget alerts, cron,
//! debounce and standby behaviour of a real engine on a SQLite store with a
//! controllable clock, and the catalog the API plans submissions with.

mod alerts;
mod catalog;
mod cron;
mod debounce;
mod in_process;
mod retention;
mod standby;
mod support;
