//! Test support shared by every crate's tests (test-only: a
//! dev-dependency, never in the `george` binary).
//!
//! - [`eventually`], [`until`] and [`wait_for`]: the one poll-until-deadline loop;
//! - [`write`] and [`git`]: files and repositories;
//! - [`postgres_server`]: a private PostgreSQL server and a fresh database per test;
//! - [`FakeRuntime`]: an in-memory runtime, so the engine runs in-process;
//! - [`lease_conformance`]: the suite every leader-election lease passes;
//! - [`runtime_conformance`]: the suite every runtime passes;
//! - [`servers`]: test servers for Jira, Kubernetes, LLM providers, a forge and git over HTTP.

pub mod fake_runtime;
pub mod files;
pub mod lease_conformance;
pub mod poll;
pub mod postgres_server;
pub mod runtime_conformance;
#[allow(missing_docs)]
pub mod servers;

pub use fake_runtime::{FakeAgent, FakeRuntime};
pub use files::{git, launcher, write};
pub use poll::{eventually, until, wait_for};
