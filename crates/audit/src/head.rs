//! Signed audit heads (docs/audit-log.md §10): each side signs "my log had N records and
//! record N hashed to H" with an Ed25519 key, so that records cut off the end of a log,
//! which leave a valid shorter chain, are found by whoever holds the public key.
//!
//! This module makes and checks signatures, reads and writes the head file kept next to
//! a log (`audit.head`), the public key file (PEM, what openssl reads) and the source
//! side's seed file. It does not decide when to sign (the agent and the store do, at the
//! end of passes and at the log's checkpoints), and it cannot tell a log cut together
//! with a head file rolled back to an older signed head: only a head kept elsewhere (the
//! move receipt, the other side's log) shows that.

use crate::record::{check_time, format_time, line_hash};
use crate::{AuditError, AuditLog};
use mailferry_core::report::{LogSide, SignedHead};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use zeroize::Zeroizing;

/// The format of a signed head, and the first line of the signed message.
pub const HEAD_FORMAT: &str = "mailferry-audit-head/1";

/// File name of the latest signed head, next to the log (`<dir>/audit.head`).
pub const HEAD_FILE: &str = "audit.head";

/// First line of the source side's seed file.
const SEED_FORMAT: &str = "mailferry-audit-signing-key/1";

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the 32 key bytes follow.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The head file of the log at `log`: `audit.head` in the same directory.
pub fn head_path(log: &Path) -> PathBuf {
    log.with_file_name(HEAD_FILE)
}

/// The exact bytes an Ed25519 signature of `h` covers: seven `\n`-terminated ASCII lines,
/// the format, then `side=`, `log=`, `seq=`, `head=`, `time=` and `key=` with the
/// head's values (docs/audit-log.md §10.1). `signature` is not part of it.
pub fn signed_message(h: &SignedHead) -> Vec<u8> {
    format!(
        "{}\nside={}\nlog={}\nseq={}\nhead={}\ntime={}\nkey={}\n",
        h.format,
        h.side.as_str(),
        h.log,
        h.seq,
        h.head,
        h.time,
        h.key
    )
    .into_bytes()
}

/// Checks the fields of a head read from somewhere untrusted: known format, lower-case
/// hex of the right lengths, seq at least 1, the time as logs write it. Says what is
/// wrong.
fn check_fields(h: &SignedHead) -> Result<(), String> {
    if h.format != HEAD_FORMAT {
        return Err(format!(
            "format {:?} is not supported (this build reads {HEAD_FORMAT})",
            h.format
        ));
    }
    let hex = |name: &str, v: &str, len: usize| {
        if v.len() == len && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(())
        } else {
            Err(format!("{name} must be {len} lower-case hex digits"))
        }
    };
    hex("log", &h.log, 64)?;
    hex("head", &h.head, 64)?;
    hex("key", &h.key, 64)?;
    hex("signature", &h.signature, 128)?;
    if h.seq == 0 {
        return Err("seq must be at least 1 (the genesis record)".into());
    }
    check_time(&h.time)
}

// === PublicKey ===

/// An Ed25519 public key that checks signed heads. Public on purpose: it is what a
/// customer or an auditor is given.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl PublicKey {
    /// The raw 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> PublicKey {
        PublicKey(bytes)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Hex SHA-256 of the 32 key bytes: what a signed head names as `key`.
    pub fn fingerprint(&self) -> String {
        line_hash(&self.0)
    }

    /// The key as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo, RFC 8410), which
    /// `openssl pkeyutl -verify -pubin -inkey FILE` reads.
    pub fn to_pem(&self) -> String {
        use base64::Engine;
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        )
    }

    /// Parses what [`PublicKey::to_pem`] writes (text around the PEM block is ignored,
    /// so a file with comments above the block reads too).
    pub fn from_pem(text: &str) -> Result<PublicKey, String> {
        use base64::Engine;
        let body = text
            .split_once("-----BEGIN PUBLIC KEY-----")
            .and_then(|(_, rest)| rest.split_once("-----END PUBLIC KEY-----"))
            .map(|(b, _)| b)
            .ok_or("no PEM block \"-----BEGIN PUBLIC KEY-----\" (expected the file written by `mailferry audit public-key`)")?;
        let b64: String = body.split_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("the PEM block is not base64: {e}"))?;
        match der.strip_prefix(&SPKI_PREFIX[..]) {
            Some(key) if key.len() == 32 => Ok(PublicKey(key.try_into().expect("length checked"))),
            _ => Err("the PEM block is not an Ed25519 public key".into()),
        }
    }

    /// Reads a public key file (PEM).
    pub fn read(path: &Path) -> Result<PublicKey, AuditError> {
        let text = std::fs::read_to_string(path).map_err(|e| AuditError::io(path, e))?;
        PublicKey::from_pem(&text).map_err(|reason| AuditError::BadKey {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Checks that `h` is well formed, names this key, and carries this key's signature
    /// over [`signed_message`]. Says what is wrong.
    pub fn check(&self, h: &SignedHead) -> Result<(), String> {
        check_fields(h)?;
        if h.key != self.fingerprint() {
            return Err(format!(
                "it was signed by key {}, not by the given public key {} (another \
                 volume's or agent's key, or a forged head)",
                h.key,
                self.fingerprint()
            ));
        }
        let sig = hex::decode(&h.signature).expect("checked hex");
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(&signed_message(h), &sig)
            .map_err(|_| {
                "its signature does not verify: the head file was edited (seq, head, time \
                 or log changed) or forged"
                    .to_string()
            })
    }
}

// === HeadSigner ===

/// The private half: signs heads of one side's log. `Debug` prints `[redacted]`; seeds
/// pass through zeroized buffers (ring's key pair keeps its own copy while it lives).
pub struct HeadSigner {
    pair: Ed25519KeyPair,
    side: LogSide,
}

impl std::fmt::Debug for HeadSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeadSigner([redacted])")
    }
}

impl HeadSigner {
    /// The signer of `side` whose Ed25519 key is the 32-byte `seed` (RFC 8032): the same
    /// seed always gives the same key, which is what the vectors rely on.
    pub fn from_seed(seed: &[u8; 32], side: LogSide) -> HeadSigner {
        let pair =
            Ed25519KeyPair::from_seed_unchecked(seed).expect("any 32 bytes are an Ed25519 seed");
        HeadSigner { pair, side }
    }

    /// The public key that checks this signer's heads.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(
            self.pair
                .public_key()
                .as_ref()
                .try_into()
                .expect("Ed25519 public keys are 32 bytes"),
        )
    }

    /// Which side's logs this signer signs.
    pub fn side(&self) -> LogSide {
        self.side
    }

    /// Signs the head `(log, seq, head)` at `time` (already in the log's time format).
    pub fn sign(&self, log: &str, seq: u64, head: &str, time: &str) -> SignedHead {
        let mut h = SignedHead {
            format: HEAD_FORMAT.into(),
            side: self.side,
            log: log.into(),
            seq,
            head: head.into(),
            time: time.into(),
            key: self.public_key().fingerprint(),
            signature: String::new(),
        };
        h.signature = hex::encode(self.pair.sign(&signed_message(&h)).as_ref());
        h
    }

    /// Signs where `log` stands now. Every record must be synced: a head covering a
    /// record that a crash could still take back would accuse an honest log.
    pub fn sign_log(&self, log: &AuditLog) -> Result<SignedHead, AuditError> {
        if !log.is_synced() {
            return Err(AuditError::InvalidRecord {
                path: log.path().to_path_buf(),
                reason: "a head is signed only after sync (records are still buffered)".into(),
            });
        }
        let time = format_time(SystemTime::now()).map_err(|reason| AuditError::InvalidRecord {
            path: log.path().to_path_buf(),
            reason,
        })?;
        Ok(self.sign(log.genesis(), log.last_seq(), log.head(), &time))
    }

    /// Reads the source side's seed file at `path`, creating it (owner-only, 32 random
    /// bytes) if it does not exist. Creation is atomic: a concurrent reader sees either
    /// no file or the whole key.
    pub fn load_or_create(path: &Path, side: LogSide) -> Result<HeadSigner, AuditError> {
        let io = |e| AuditError::io(path, e);
        match std::fs::read_to_string(path).map(Zeroizing::new) {
            Ok(text) => return Self::parse_seed_file(path, &text, side),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed[..])
            .expect("the OS random number generator failed");
        let text = Zeroizing::new(format!("{SEED_FORMAT}\n{}\n", hex::encode(&seed[..])));
        let tmp = path.with_extension("key-tmp");
        let written = (|| {
            let mut f = crate::private::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            // A link fails if another process created the key first: then use theirs.
            let linked = std::fs::hard_link(&tmp, path);
            std::fs::remove_file(&tmp)?;
            match linked {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        })()
        .map_err(io)?;
        if written {
            crate::log::sync_parent(path).map_err(io)?;
            Ok(Self::from_seed(&seed, side))
        } else {
            let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
            Self::parse_seed_file(path, &text, side)
        }
    }

    fn parse_seed_file(path: &Path, text: &str, side: LogSide) -> Result<HeadSigner, AuditError> {
        let bad = |reason: &str| AuditError::BadKey {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let mut lines = text.lines();
        if lines.next() != Some(SEED_FORMAT) {
            return Err(bad(&format!(
                "not a signing key file (its first line must be {SEED_FORMAT})"
            )));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        let hex_seed = lines.next().unwrap_or("").trim();
        hex::decode_to_slice(hex_seed, &mut seed[..])
            .map_err(|_| bad("the second line must be the 64 hex digits of the seed"))?;
        crate::private::warn_if_exposed(path, "audit signing key");
        Ok(Self::from_seed(&seed, side))
    }
}

// === the head file ===

/// Reads and checks the form of the signed head in `path` (not its signature: that
/// needs the public key, [`PublicKey::check`]).
pub fn read_head(path: &Path) -> Result<SignedHead, AuditError> {
    let bytes = std::fs::read(path).map_err(|e| AuditError::io(path, e))?;
    parse_head(&bytes).map_err(|reason| AuditError::BadHead {
        path: path.to_path_buf(),
        reason: format!("signed head unusable: {reason}"),
    })
}

/// Parses and checks the form of a signed head (one JSON object, as in the head file).
pub fn parse_head(bytes: &[u8]) -> Result<SignedHead, String> {
    let h: SignedHead =
        serde_json::from_slice(bytes).map_err(|e| format!("not a signed head: {e}"))?;
    check_fields(&h)?;
    Ok(h)
}

/// Writes `h` to `path` as one JSON line, atomically: temp file, fsync, rename, and the
/// directory synced, so a crash leaves the old head or the new one.
pub fn write_head(path: &Path, h: &SignedHead) -> Result<(), AuditError> {
    let mut line = serde_json::to_vec(h).expect("strings and integers serialise");
    line.push(b'\n');
    let tmp = path.with_extension("head-tmp");
    (|| {
        let mut f = crate::private::create(&tmp)?;
        f.write_all(&line)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        crate::log::sync_parent(path)
    })()
    .map_err(|e| AuditError::io(path, e))
}

// === HeadKeeper ===

/// Signs one log's head and keeps the latest in its head file, for the writer of the
/// log. It never replaces a head file it cannot prove is older than the log: a head
/// that covers more records than the log holds, names another log, or cannot be read is
/// evidence (of a cut or a replaced log), so signing stops with a warning instead.
#[derive(Debug)]
pub struct HeadKeeper {
    signer: HeadSigner,
    path: PathBuf,
    /// Records covered by the head file (0: none yet).
    signed_seq: u64,
    /// Why signing is stopped, if it is.
    stopped: Option<String>,
    latest: Option<SignedHead>,
}

impl HeadKeeper {
    /// The keeper of `log`'s head file, checking what the file holds now.
    pub fn new(signer: HeadSigner, log: &AuditLog) -> HeadKeeper {
        let path = head_path(log.path());
        let mut k = HeadKeeper {
            signer,
            path,
            signed_seq: 0,
            stopped: None,
            latest: None,
        };
        match read_head(&k.path) {
            Err(AuditError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            }
            Err(e) => k.stop(format!("{e}")),
            Ok(h) if h.log != log.genesis() => k.stop(format!(
                "{} is the signed head of another log ({}), not of {} ({})",
                k.path.display(),
                h.log,
                log.path().display(),
                log.genesis()
            )),
            Ok(h) if h.seq > log.last_seq() => k.stop(format!(
                "records cut off the end of {}: the signed head of {} covers {} records, \
                 the log has {}",
                log.path().display(),
                h.time,
                h.seq,
                log.last_seq()
            )),
            Ok(h) => {
                k.signed_seq = h.seq;
                if h.key == k.signer.public_key().fingerprint() {
                    k.latest = Some(h);
                }
            }
        }
        k
    }

    fn stop(&mut self, reason: String) {
        tracing::warn!(
            path = %self.path.display(),
            %reason,
            "audit head not signed: the head file is kept as evidence; run `mailferry \
             audit verify --public-key` and restore the log, or move the head file away \
             to sign again"
        );
        self.stopped = Some(reason);
    }

    /// Signs where `log` stands (synced) and writes the head file; returns the new head,
    /// or `None` if signing is stopped ([`HeadKeeper::stopped`]).
    pub fn sign(&mut self, log: &AuditLog) -> Result<Option<SignedHead>, AuditError> {
        if self.stopped.is_some() {
            return Ok(None);
        }
        let h = self.signer.sign_log(log)?;
        write_head(&self.path, &h)?;
        self.signed_seq = h.seq;
        self.latest = Some(h.clone());
        Ok(Some(h))
    }

    /// [`HeadKeeper::sign`] for callers whose records are already durable: a head that
    /// cannot be written is a warning, not a reason to fail the work the records
    /// describe (the next head covers them).
    pub fn sign_or_warn(&mut self, log: &AuditLog) {
        if let Err(e) = self.sign(log) {
            tracing::warn!(error = %e, "audit head not signed; the records are durable and the next head covers them");
        }
    }

    /// Signs ([`HeadKeeper::sign_or_warn`]) if `log` passed one of its checkpoints
    /// (every 1001st record) since the last head: the bound on what a cut can take back
    /// unseen during a long pass.
    pub fn sign_at_checkpoint(&mut self, log: &AuditLog) {
        let every = crate::mmr::CHECKPOINT_EVERY + 1;
        if log.last_seq() / every > self.signed_seq / every {
            self.sign_or_warn(log);
        }
    }

    /// True if `log` has records the head file does not cover.
    pub fn behind(&self, log: &AuditLog) -> bool {
        self.stopped.is_none() && log.last_seq() > self.signed_seq
    }

    /// The latest head signed by this keeper's key, if any.
    pub fn latest(&self) -> Option<&SignedHead> {
        self.latest.as_ref()
    }

    /// Why signing is stopped, if it is.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// The public key of the signer.
    pub fn public_key(&self) -> PublicKey {
        self.signer.public_key()
    }
}

// === verification ===

/// What [`verify_signed`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignedOutcome {
    /// The chain's outcome (records, head).
    pub chain: crate::VerifyOutcome,
    /// The head that was checked.
    pub signed: SignedHead,
    /// Records after the signed head (appended since it was signed; not an error).
    pub unsigned_records: u64,
}

/// Checks `signed` against `key`, then the log at `path`: its chain, that it is the log
/// the head names, and that it holds record `signed.seq` with exactly the signed hash.
/// A log shorter than the head, or whose record `seq` differs, fails
/// ([`AuditError::Truncated`], [`AuditError::SignedRecordDiffers`]); records after it are
/// counted in [`SignedOutcome::unsigned_records`].
pub fn verify_signed(
    path: impl AsRef<Path>,
    signed: &SignedHead,
    key: &PublicKey,
) -> Result<SignedOutcome, AuditError> {
    let path = path.as_ref();
    key.check(signed).map_err(|reason| AuditError::BadHead {
        path: path.to_path_buf(),
        reason: format!("signed head refused: {reason}"),
    })?;
    let file = std::fs::File::open(path).map_err(|e| AuditError::io(path, e))?;
    let (chain, pinned) =
        crate::verify::verify_pinned(path, std::io::BufReader::new(file), signed.seq)?;
    if chain.genesis != signed.log {
        return Err(AuditError::BadHead {
            path: path.to_path_buf(),
            reason: format!(
                "signed head refused: it is of another log (genesis {}), this log's genesis is {}: \
                 the log was replaced, or the head belongs to another log",
                signed.log, chain.genesis
            ),
        });
    }
    match pinned {
        None => Err(AuditError::Truncated {
            path: path.to_path_buf(),
            time: signed.time.clone(),
            signed: signed.seq,
            records: chain.records,
        }),
        Some(found) if found != signed.head => Err(AuditError::SignedRecordDiffers {
            path: path.to_path_buf(),
            time: signed.time.clone(),
            seq: signed.seq,
            expected: signed.head.clone(),
            found,
        }),
        Some(_) => Ok(SignedOutcome {
            unsigned_records: chain.records - signed.seq,
            chain,
            signed: signed.clone(),
        }),
    }
}

#[cfg(test)]
mod tests;
