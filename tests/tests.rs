//! Integration tests of mailferry: the real binary on real files, real TLS on loopback,
//! a real SQLite index. One temp directory per test.

mod admin_api;
mod audit;
mod audit_heads;
mod batch;
mod batch_db;
mod bench;
mod browser;
mod control;
mod customer_key;
mod dovecot;
mod fidelity_files;
mod fidelity_imap;
mod fidelity_items;
mod fidelity_tls;
mod foundation;
mod house;
mod imap;
mod imap_wan;
mod lifecycle;
mod mirror;
mod pg_tls;
mod profiles;
mod s3_volume;
mod serve;
mod sources;
mod split;
mod util;
mod volume;
mod wire;
mod workers;
