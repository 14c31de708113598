//! The engine's integration tests, in one binary: budget alerts, cron,
//! debounce and standby behaviour of a real engine on a SQLite store with a
//! controllable clock.

mod alerts;
mod cron;
mod debounce;
mod in_process;
mod retention;
mod standby;
mod support;
