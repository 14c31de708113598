//! George engine: the reconciler, health checks and the run loop
