//! George's integration tests, in one binary (the support code in
//! [`common`] compiles once): real `george` processes on temporary data
//! directories, real git repositories, the real Docker Engine, a private
//! PostgreSQL server, headless Chromium, and test servers for what cannot run
//! here (Jira, Kubernetes, LLM providers, a forge). The chaos runs have a
//! binary of their own (`tests/chaos.rs`): they must run alone.

mod common;

mod api_contract;
mod bad_input;
mod cli;
mod coding;
mod control;
mod control_plane;
mod dashboard;
mod docker;
mod docs;
mod failures;
mod github;
mod jira;
mod kube_api;
mod kubernetes;
mod leases;
mod live_api;
mod llm_agent;
mod llm_proxy;
mod observability;
mod partition;
mod pools;
mod postgres_engine;
mod quickstart;
mod scheduler;
mod slack;
mod sources;
mod steps;
mod subagents;
mod triggers;
