//! The scratch Dovecot IMAP server of `mailferry_bench::dovecot` (Debian `dovecot-imapd`,
//! under a temp directory, TLS required, one passwd-file user), with the panicking
//! conveniences tests want: a failure to start or a failed `doveadm` fails the test with
//! Dovecot's own output.

#![allow(unused_imports)]

pub use mailferry_bench::dovecot::{available, Options, PASSWORD, USER};
use std::process::Output;

/// A running scratch Dovecot with [`USER`]; stopped when dropped.
pub struct Dovecot(mailferry_bench::dovecot::Dovecot);

impl std::ops::Deref for Dovecot {
    type Target = mailferry_bench::dovecot::Dovecot;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Dovecot {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Dovecot {
    /// Starts the server; returns once it accepts TLS connections on its IMAPS port.
    pub fn start() -> Dovecot {
        Dovecot(mailferry_bench::dovecot::Dovecot::start().unwrap_or_else(|e| panic!("{e}")))
    }

    /// Starts a server for [`USER`] configured by `opts`.
    #[allow(dead_code)] // not every includer of this module starts a configured server
    pub fn start_configured(opts: &Options) -> Dovecot {
        Dovecot(
            mailferry_bench::dovecot::Dovecot::start_configured(None, &[USER], opts)
                .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    /// Starts a server for [`USER`] whose Maildir is `mail_root/<USER>` (a tree made
    /// elsewhere, e.g. by `mailferry export`), configured by `opts`.
    #[allow(dead_code)]
    pub fn start_in(mail_root: &std::path::Path, opts: &Options) -> Dovecot {
        Dovecot(
            mailferry_bench::dovecot::Dovecot::start_configured(Some(mail_root), &[USER], opts)
                .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    /// Stops and starts the server with the same configuration and ports.
    pub fn restart(&mut self) {
        self.0.restart().unwrap_or_else(|e| panic!("{e}"))
    }

    /// `doveadm -c <conf> ARGS...`, which must succeed.
    pub fn doveadm(&self, args: &[&str]) -> Output {
        self.0.doveadm(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Writes a message file into the Maildir (see the library's `put`).
    pub fn put(&self, folder_dir: &str, name: &str, flags: &str, body: &[u8], mtime: i64) {
        self.0
            .put(folder_dir, name, flags, body, mtime)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}
