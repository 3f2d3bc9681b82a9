//! Sockets as the relay and the ingresses use them, below both: whole writes and exact reads on a
//! shared stream ([`io`]), driven by readiness.

pub mod io;
