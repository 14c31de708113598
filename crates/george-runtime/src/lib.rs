//! George runtimes: the Runtime trait and the local-process runtime
