//! Integration tests of mailferry: the real binary on real files, real TLS on loopback,
//! a real SQLite index. One temp directory per test.

mod foundation;
mod util;
mod wire;
