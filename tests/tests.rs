//! Integration tests of mailferry: the real binary on real files, real TLS on loopback,
//! a real SQLite index. One temp directory per test.

mod audit;
mod foundation;
mod serve;
mod split;
mod util;
mod volume;
mod wire;
