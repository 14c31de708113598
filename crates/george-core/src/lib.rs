//! George's domain: manifests, job and agent states, template rendering and the
//! API's wire types. This crate does no I/O; every other crate builds on it.

pub mod api;
pub mod clock;
pub mod duration;
pub mod event;
pub mod labels;
pub mod manifest;
pub mod plan;
pub mod quantity;
pub mod record;
pub mod schedule;
pub mod status;
pub mod template;
pub mod validate;
pub mod yaml;

pub use clock::{Clock, ManualClock, SystemClock};
pub use event::EventKind;
pub use status::{AgentState, DesiredState, JobStatus, Priority, Role, StepStatus};
