//! George API client used by the CLI and the reference agent
