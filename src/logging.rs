//! Logging setup (being written).
