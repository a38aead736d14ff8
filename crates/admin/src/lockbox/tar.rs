//! A mailbox as a Maildir in a tar archive, written message by message to any
//! `Write`: the lockbox's export ([`super::Lockbox::open_grant`] first).
//!
//! Why a Maildir tar: every message is one tar entry whose bytes are read and written
//! in one go, so the archive streams straight from the volume into the HTTPS response
//! and no plaintext ever lands on the service's disk (an mbox file per folder would
//! need its size before its first byte, or a temporary file). A Maildir restores into
//! Dovecot as it is, and mail clients import it. Layout as `mailferry export --format
//! maildir` writes it (Maildir++, modified UTF-7 names, `cur/<source id>:2,<flags>`, the
//! internal date as mtime) under a top directory named after the mailbox; keywords are
//! not written (only the flag letters). A message that cannot be read is named in
//! `EXPORT-ERRORS.txt` at the end and the others still come out.
//!
//! ustar headers, with a pax `path` record for names over 100 bytes. It reads only
//! what the volume lets it read: unlocking is the caller's business.

use mailferry_control::export::{folder_dir, MaildirOptions};
use mailferry_core::MailboxAddr;
use mailferry_store::Volume;
use std::collections::HashSet;
use std::io::{self, Write};

const BLOCK: usize = 512;

/// What an export wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    /// Messages written.
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Messages that could not be read (named in `EXPORT-ERRORS.txt`).
    pub damaged: u64,
}

fn octal(field: &mut [u8], v: u64) {
    // NUL-terminated, zero-padded octal filling the field.
    let n = field.len() - 1;
    let s = format!("{v:0n$o}");
    field[..n].copy_from_slice(s.as_bytes());
    field[n] = 0;
}

fn header(name: &[u8], size: u64, mtime: u64, kind: u8) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    octal(&mut h[100..108], if kind == b'5' { 0o700 } else { 0o600 });
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// Writes one entry (a pax header first when the name is long) and pads it.
pub fn entry(w: &mut dyn Write, name: &str, data: &[u8], mtime: u64) -> io::Result<()> {
    if name.len() > 100 {
        // "LEN path=NAME\n", LEN counting itself.
        let body_len = " path=\n".len() + name.len();
        let mut len = body_len + 1;
        while len.to_string().len() + body_len != len {
            len = len.to_string().len() + body_len;
        }
        let record = format!("{len} path={name}\n");
        w.write_all(&header(b"pax", record.len() as u64, mtime, b'x'))?;
        w.write_all(record.as_bytes())?;
        pad(w, record.len())?;
    }
    w.write_all(&header(name.as_bytes(), data.len() as u64, mtime, b'0'))?;
    w.write_all(data)?;
    pad(w, data.len())
}

fn pad(w: &mut dyn Write, len: usize) -> io::Result<()> {
    let rest = (BLOCK - len % BLOCK) % BLOCK;
    w.write_all(&[0u8; BLOCK][..rest])
}

/// The end of the archive: two zero blocks.
pub fn finish(w: &mut dyn Write) -> io::Result<()> {
    w.write_all(&[0u8; 2 * BLOCK])
}

/// A file name from a source id: the id itself when it is a plain name, else the
/// store's message id.
fn file_stem(source_id: &str, id: u64) -> String {
    let plain = !source_id.is_empty()
        && source_id != "."
        && source_id != ".."
        && !source_id.contains(['/', '\0'])
        && source_id.len() <= 200;
    if plain {
        source_id.to_string()
    } else {
        format!("message-{id}")
    }
}

/// Writes `mailbox` as `MAILBOX/<Maildir++ tree>` entries, then the end of the archive.
/// An I/O error of `w` (the client went away) stops it.
pub fn write_mailbox(
    volume: &Volume,
    mailbox: &MailboxAddr,
    w: &mut dyn Write,
) -> io::Result<Written> {
    let listed = volume
        .list_messages(mailbox)
        .map_err(|e| io::Error::other(format!("listing {mailbox}: {e}")))?;
    let top = mailbox.as_str().to_string();
    let mut out = Written::default();
    let mut errors = String::new();
    let mut names: HashSet<String> = HashSet::new();
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    for msg in listed {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                out.damaged += 1;
                errors.push_str(&format!("a message of {mailbox}: {e}\n"));
                continue;
            }
        };
        let item = format!("{}/{}", msg.meta.folder, msg.meta.source_id);
        let dir = match folder_dir(&msg.meta.folder, MaildirOptions::default()) {
            Ok(d) => d,
            Err(why) => {
                out.damaged += 1;
                errors.push_str(&format!("{item}: {why}\n"));
                continue;
            }
        };
        zeroize::Zeroize::zeroize(&mut *buf);
        if let Err(e) = volume.read_message(&msg, &mut *buf) {
            out.damaged += 1;
            errors.push_str(&format!("{item}: {e}\n"));
            continue;
        }
        let folder = dir.to_string_lossy();
        let stem = file_stem(msg.meta.source_id.as_str(), msg.id);
        let letters = msg.meta.flags.letters();
        let prefix = if folder.is_empty() {
            format!("{top}/cur/")
        } else {
            format!("{top}/{folder}/cur/")
        };
        let mut name = format!("{prefix}{stem}:2,{letters}");
        if !names.insert(name.clone()) {
            // Same source id stored twice with different content: keep both.
            name = format!("{prefix}{stem}.{}:2,{letters}", msg.id);
            names.insert(name.clone());
        }
        entry(w, &name, &buf, msg.meta.internal_date.max(0) as u64)?;
        out.messages += 1;
        out.bytes += buf.len() as u64;
    }
    if !errors.is_empty() {
        let now = mailferry_core::unix_now().max(0) as u64;
        entry(
            w,
            &format!("{top}/EXPORT-ERRORS.txt"),
            errors.as_bytes(),
            now,
        )?;
    }
    finish(w)?;
    Ok(out)
}
