//! George store: the Store trait, its SQLite implementation and conformance suite
