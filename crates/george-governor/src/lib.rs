//! The governor (seed 003 §4, "the Mana Pool"): token budgets in a hierarchy
//! org → chapter → AgentSpec, per day and per month, checked before every
//! LLM call and charged with the provider's own usage figures afterwards;
//! rate limits that pace calls; and the providers the proxy forwards to.

pub mod budget;
pub mod provider;
pub mod rate;
pub mod usage;

pub use budget::{Budgets, Charge, Governor, Level, Limit, Period, Refusal, Reservation};
pub use provider::{Provider, ProviderApi, ProviderKey};
pub use rate::{Pace, RateLimit, RateScope, Rates};
pub use usage::{parse_usage, StreamUsage, Usage};
