//! mbox source: one mbox file (moved as the INBOX), or a directory of mbox files (one
//! folder per file, named after it; subdirectories and Thunderbird `X.sbd` directories
//! become nested folders; `.msf` index files are skipped).
//!
//! Listing reads every file once, start to end, with a fixed-size buffer: it splits
//! messages, hashes each one (its source id derives from its content, so ids survive
//! deletions and appends), counts the bytes the `>From ` unquoting removes (so
//! [`SourceItem::size`] is exactly what [`Source::open`] yields), and reads `Status:`,
//! `X-Status:`, `X-Mozilla-Status:`, `Date:` and the keywords of `X-Keywords:` and
//! `Keywords:` (comma- and/or space-separated, as Dovecot, mutt and Thunderbird write
//! them; one that is not a valid keyword is left out with a warning). Those headers are
//! read as they are: the message bytes moved are the file's bytes. Opening a message streams its byte range
//! through [`Unquoter`]; no message is ever held in memory. The rules (separators,
//! mboxrd quoting, ids, truncation, the export round trip) are in `docs/mbox.md`.
//!
//! This module only reads; it never writes to, locks or rewrites the source files.

use super::{mtime_secs, Listing, Location, PriorLookup, Source, SourceItem};
use crate::AgentError;
use mailferry_core::calendar::{self, Civil};
use mailferry_core::{Flags, FolderName, SourceId};
use percent_encoding::{percent_decode_str, percent_encode, AsciiSet, CONTROLS};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The longest line (newline included) that can separate messages. A longer line that
/// starts with `From ` is message text. RFC 5322 lines are at most 998 bytes plus CRLF.
pub const MAX_SEPARATOR_LINE: usize = 1000;

/// Source ids longer than this drop the envelope sender (export then writes
/// `MAILER-DAEMON`): a Maildir export appends `:2,<flags>` and file names end at 255 bytes.
const MAX_ID_LEN: usize = 200;

const WORD: &[u8; 5] = b"From ";
const READ_BUF: usize = 256 * 1024;

/// Bytes of an envelope sender that are percent-encoded in a source id: what
/// [`SourceId::parse`] refuses, plus `%` itself. Non-ASCII bytes are always encoded.
const SENDER_SET: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b'/').add(b':').add(b'\\');

// === dates ===

/// Formats Unix seconds as the asctime date of an mbox `From ` line, in UTC:
/// `Mon Jan  1 00:00:00 2024`.
pub fn asctime(t: i64) -> String {
    let c = Civil::from_unix(t);
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {:04}",
        c.weekday_abbrev(),
        c.month_abbrev(),
        c.day,
        c.hour,
        c.minute,
        c.second,
        c.year,
    )
}

/// `+hhmm` / `-hhmm` as seconds east of UTC.
fn numeric_zone(t: &str) -> Option<i64> {
    let (sign, h, m) = calendar::hhmm_offset(t)?;
    (h <= 23 && m <= 59).then_some(sign * (h * 3600 + m * 60))
}

fn is_zone_name(t: &str) -> bool {
    (1..=5).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphabetic())
}

/// Parses the date part of a `From ` line (what follows the sender), liberally:
/// `[Www] Mmm d hh:mm[:ss] [zone] yyyy [zone] [anything]`. Without a numeric zone the
/// date is read as UTC (mbox writers use local time and do not say which). `None` if it
/// is not a date.
pub fn parse_envelope_date(s: &str) -> Option<i64> {
    let mut toks = s.split_ascii_whitespace();
    let mut t = toks.next()?;
    let t_day = t.strip_suffix(',').unwrap_or(t);
    if calendar::WEEKDAYS
        .iter()
        .any(|w| t_day.eq_ignore_ascii_case(w))
    {
        t = toks.next()?;
    }
    let month = calendar::month_from_abbrev(t)?;
    let day: u32 = toks.next()?.parse().ok()?;
    let mut hms = toks.next()?.split(':');
    let mut field = |max: i64| -> Option<i64> {
        let f = hms.next()?;
        if f.is_empty() || f.len() > 2 || !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        f.parse().ok().filter(|v| *v <= max)
    };
    let (h, mi) = (field(23)?, field(59)?);
    let sec = match hms.next() {
        None => 0,
        Some(f) if (1..=2).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit()) => {
            f.parse::<i64>().ok().filter(|v| *v <= 60)?
        }
        Some(_) => return None,
    };
    if hms.next().is_some() {
        return None;
    }
    let mut offset = 0;
    let mut t = toks.next()?;
    if let Some(z) = numeric_zone(t) {
        offset = z;
        t = toks.next()?;
    } else if is_zone_name(t) {
        t = toks.next()?;
    }
    if t.len() != 4 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i64 = t.parse().ok()?;
    if let Some(z) = toks.next().and_then(numeric_zone) {
        offset = z;
    }
    // Unlike INTERNALDATE, 31 February is not a date here.
    let days = calendar::days_from_civil(year, month, day)?;
    Some(days * calendar::DAY + h * 3600 + mi * 60 + sec - offset)
}

// === separator lines and source ids ===

/// What a `From ` separator line says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The envelope sender (the first word), if not empty.
    pub sender: Option<Vec<u8>>,
    /// The date, Unix seconds, if it parses.
    pub date: Option<i64>,
}

/// Parses a line that starts with `From ` (with or without its line end).
pub fn parse_separator(line: &[u8]) -> Envelope {
    let rest = line.strip_prefix(WORD.as_slice()).unwrap_or(line);
    let rest = rest.strip_suffix(b"\n").unwrap_or(rest);
    let rest = rest.strip_suffix(b"\r").unwrap_or(rest);
    let (sender, date) = match rest.iter().position(|&b| b == b' ' || b == b'\t') {
        Some(p) => (&rest[..p], &rest[p + 1..]),
        None => (rest, &[][..]),
    };
    Envelope {
        sender: (!sender.is_empty()).then(|| sender.to_vec()),
        date: std::str::from_utf8(date).ok().and_then(parse_envelope_date),
    }
}

/// The parts a source id is made of: the first 16 hex digits of the message's SHA-256,
/// and the percent-encoded envelope sender if the id has room for it. Identical messages
/// with the same sender in one folder share these parts and are told apart by `-2`,
/// `-3`, ... in file order ([`assemble_source_id`]).
fn id_parts(sha256: &[u8; 32], sender: Option<&[u8]>) -> (String, Option<String>) {
    let digest = hex::encode(&sha256[..8]);
    let sender = sender
        .map(|s| percent_encode(s, SENDER_SET).to_string())
        // room for `-<dup>` too
        .filter(|enc| digest.len() + 12 + enc.len() <= MAX_ID_LEN);
    (digest, sender)
}

fn assemble_source_id(digest: &str, dup: u32, sender: Option<&str>) -> SourceId {
    let mut id = digest.to_string();
    if dup > 1 {
        id.push_str(&format!("-{dup}"));
    }
    if let Some(s) = sender {
        id.push('~');
        id.push_str(s);
    }
    SourceId::parse(&id).expect("hex digits and a percent-encoded sender make a valid source id")
}

/// Splits an mbox source id (`<16 hex>[-<n>][~<sender>]`) into its digest prefix and
/// the envelope sender; `None` for ids of other sources.
fn split_source_id(id: &SourceId) -> Option<([u8; 8], Option<Vec<u8>>)> {
    let s = id.as_str();
    let (head, sender) = match s.split_once('~') {
        Some((h, enc)) => (h, Some(enc)),
        None => (s, None),
    };
    let (digest, dup) = match head.split_once('-') {
        Some((d, n)) => (d, Some(n)),
        None => (head, None),
    };
    if digest.len() != 16
        || !digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    if let Some(n) = dup {
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    let mut prefix = [0u8; 8];
    hex::decode_to_slice(digest, &mut prefix).ok()?;
    let sender = sender
        .map(|enc| percent_decode_str(enc).collect::<Vec<u8>>())
        .filter(|s| {
            !s.is_empty()
                && !s
                    .iter()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        });
    Some((prefix, sender))
}

/// The envelope sender an mbox source id carries, for the `From ` line of an mbox
/// export; `None` for ids from other sources or of messages whose `From ` line had none.
pub fn envelope_sender(id: &SourceId) -> Option<Vec<u8>> {
    split_source_id(id)?.1
}

// === quoting ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Inside a line: copy up to the next newline.
    Mid,
    /// At the start of a line: `gts` `>` seen, then `m` bytes of `From ` matched, none
    /// of them emitted yet.
    Start { gts: u64, m: u8 },
}

/// What one byte at the start of a line did to the `>*From ` match in progress
/// ([`Mode::start_byte`]); the reader and the writer differ only in what they emit.
enum StartStep {
    /// The byte was a `>` or the next byte of `From `: consumed, nothing decided yet.
    Held,
    /// The byte completed `>`×`gts` + `From `: consumed, the line is a `From ` line.
    Quoted { gts: u64 },
    /// The byte ends the match: not consumed, and the `gts` `>` and the first `m`
    /// bytes of `From ` held back are plain text.
    Plain { gts: u64, m: u8 },
}

impl Mode {
    /// In [`Mode::Mid`]: how many bytes of `avail` belong to the current line, up to
    /// and including its `\n` (after which the mode is back at a line start).
    #[inline]
    fn mid_len(&mut self, avail: &[u8]) -> usize {
        match avail.iter().position(|&b| b == b'\n') {
            Some(p) => {
                *self = Mode::Start { gts: 0, m: 0 };
                p + 1
            }
            None => avail.len(),
        }
    }

    /// In [`Mode::Start`]: takes byte `b` of the line start. The caller sets the mode
    /// after `Quoted` and `Plain` (both leave it unchanged).
    #[inline]
    fn start_byte(&mut self, b: u8) -> StartStep {
        let Mode::Start { gts, m } = *self else {
            return StartStep::Plain { gts: 0, m: 0 };
        };
        if m == 0 && b == b'>' {
            *self = Mode::Start { gts: gts + 1, m };
            StartStep::Held
        } else if b == WORD[m as usize] {
            if m + 1 == WORD.len() as u8 {
                StartStep::Quoted { gts }
            } else {
                *self = Mode::Start { gts, m: m + 1 };
                StartStep::Held
            }
        } else {
            StartStep::Plain { gts, m }
        }
    }
}

/// Undoes mboxrd quoting as a stream: a line that starts with one or more `>` followed by
/// `From ` loses its first `>`; every other byte passes unchanged. The state spans calls,
/// so input can be cut anywhere; memory is constant (a run of `>` is only counted).
#[derive(Clone, Debug)]
pub struct Unquoter {
    mode: Mode,
    /// `>` still to emit.
    pend_gt: u64,
    /// `WORD[word_at..word_end]` still to emit (after the `>`).
    word_at: u8,
    word_end: u8,
}

impl Default for Unquoter {
    fn default() -> Self {
        Unquoter {
            mode: Mode::Start { gts: 0, m: 0 },
            pend_gt: 0,
            word_at: 0,
            word_end: 0,
        }
    }
}

impl Unquoter {
    /// At the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Unquotes as much of `input` into `out` as fits. Returns (bytes of `input`
    /// consumed, bytes written to `out`). It stops only when `input` is used up or `out`
    /// is full; call again with the rest (or an empty input after [`Unquoter::finish`]).
    pub fn step(&mut self, input: &[u8], out: &mut [u8]) -> (usize, usize) {
        let (mut i, mut o) = (0usize, 0usize);
        loop {
            if self.pend_gt > 0 {
                let n = (out.len() - o).min(usize::try_from(self.pend_gt).unwrap_or(usize::MAX));
                out[o..o + n].fill(b'>');
                o += n;
                self.pend_gt -= n as u64;
            }
            while self.pend_gt == 0 && self.word_at < self.word_end && o < out.len() {
                out[o] = WORD[self.word_at as usize];
                o += 1;
                self.word_at += 1;
            }
            if self.pend_gt > 0 || self.word_at < self.word_end || o == out.len() {
                return (i, o);
            }
            if i == input.len() {
                return (i, o);
            }
            match self.mode {
                Mode::Mid => {
                    let room = out.len() - o;
                    let avail = &input[i..input.len().min(i + room)];
                    let n = self.mode.mid_len(avail);
                    out[o..o + n].copy_from_slice(&avail[..n]);
                    o += n;
                    i += n;
                }
                Mode::Start { .. } => match self.mode.start_byte(input[i]) {
                    StartStep::Held => i += 1,
                    StartStep::Quoted { gts } => {
                        i += 1;
                        // `>+From `: one `>` less. `From ` alone: as is.
                        self.emit(gts.saturating_sub(1), WORD.len() as u8);
                    }
                    // Not a quoted line: what was held back goes out unchanged, and the
                    // byte is looked at again as ordinary text.
                    StartStep::Plain { gts, m } => self.emit(gts, m),
                },
            }
        }
    }

    fn emit(&mut self, gts: u64, word: u8) {
        self.pend_gt = gts;
        self.word_at = 0;
        self.word_end = word;
        self.mode = Mode::Mid;
    }

    /// Ends the message: what was held back at the start of an unfinished last line is
    /// released (it was not a quoted `From ` line). Drain it with `step(&[], ..)`.
    pub fn finish(&mut self) {
        if let Mode::Start { gts, m } = self.mode {
            if gts > 0 || m > 0 {
                self.emit(gts, m);
            }
        }
    }

    /// Unquotes a whole slice (tests and small inputs).
    pub fn unquote_all(input: &[u8]) -> Vec<u8> {
        let mut u = Unquoter::new();
        let mut out = Vec::with_capacity(input.len());
        let mut buf = [0u8; 4096];
        let mut rest = input;
        loop {
            let (c, p) = u.step(rest, &mut buf);
            out.extend_from_slice(&buf[..p]);
            rest = &rest[c..];
            if rest.is_empty() && p < buf.len() {
                break;
            }
        }
        u.finish();
        loop {
            let (_, p) = u.step(&[], &mut buf);
            out.extend_from_slice(&buf[..p]);
            if p < buf.len() {
                return out;
            }
        }
    }
}

/// Writes one message into an mbox with mboxrd quoting: every line that starts with zero
/// or more `>` and then `From ` gets one more `>`, so [`Unquoter`] gives back exactly
/// what was written. Call [`QuotingWriter::finish`] at the end of the message.
pub struct QuotingWriter<W: Write> {
    inner: W,
    mode: Mode,
    last: Option<u8>,
}

impl<W: Write> QuotingWriter<W> {
    /// A writer at the start of a message.
    pub fn new(inner: W) -> Self {
        QuotingWriter {
            inner,
            mode: Mode::Start { gts: 0, m: 0 },
            last: None,
        }
    }

    fn write_gts(&mut self, mut n: u64) -> io::Result<()> {
        const GTS: [u8; 64] = [b'>'; 64];
        while n > 0 {
            let k = n.min(GTS.len() as u64) as usize;
            self.inner.write_all(&GTS[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    /// Ends the message; returns the inner writer and whether the message ended with a
    /// newline (mbox needs one before the blank line that separates messages).
    pub fn finish(mut self) -> io::Result<(W, bool)> {
        if let Mode::Start { gts, m } = self.mode {
            self.write_gts(gts)?;
            self.inner.write_all(&WORD[..m as usize])?;
        }
        Ok((self.inner, self.last == Some(b'\n')))
    }
}

impl<W: Write> Write for QuotingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut i = 0;
        while i < data.len() {
            match self.mode {
                Mode::Mid => {
                    let rest = &data[i..];
                    let n = self.mode.mid_len(rest);
                    self.inner.write_all(&rest[..n])?;
                    i += n;
                }
                Mode::Start { .. } => match self.mode.start_byte(data[i]) {
                    StartStep::Held => i += 1,
                    StartStep::Quoted { gts } => {
                        i += 1;
                        self.write_gts(gts + 1)?;
                        self.inner.write_all(WORD)?;
                        self.mode = Mode::Mid;
                    }
                    // The byte is written again as ordinary text.
                    StartStep::Plain { gts, m } => {
                        self.write_gts(gts)?;
                        self.inner.write_all(&WORD[..m as usize])?;
                        self.mode = Mode::Mid;
                    }
                },
            }
        }
        if let Some(&b) = data.last() {
            self.last = Some(b);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

// === splitting ===

/// One message found by [`scan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scanned {
    /// Offset of its first byte in the file (just after its `From ` line).
    pub start: u64,
    /// Raw (quoted) length in the file, without the blank line before the next `From `.
    pub len: u64,
    /// Length once unquoted: exactly what [`MessageReader`] yields.
    pub size: u64,
    /// SHA-256 of the raw bytes.
    pub sha256: [u8; 32],
    /// What its `From ` line said.
    pub envelope: Envelope,
    /// The first `Date:` header, Unix seconds, if it parses.
    pub date_header: Option<i64>,
    /// Maildir flag letters from `Status:`, `X-Status:` and `X-Mozilla-Status:`.
    pub flags: String,
    /// Keywords from `X-Keywords:` and `Keywords:`, each a valid keyword.
    pub keywords: Vec<String>,
    /// Why it cannot be moved (empty, truncated), if so.
    pub problem: Option<String>,
}

/// Why a file could not be split. The source turns it into an [`AgentError`] (a single
/// mbox) or a named bad item (a file of a directory); it never leaves this module's
/// callers as an error of its own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// It is not an mbox (it does not start with a `From ` line).
    #[error("not an mbox: {0}")]
    NotMbox(String),
    /// Reading failed.
    #[error("read failed: {0}")]
    Io(io::Error),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Field {
    #[default]
    Other,
    Status,
    XStatus,
    XMozillaStatus,
    Keywords,
    Date,
}

/// The few header fields the listing reads, one line at a time (continuation lines
/// included), with bounded memory.
#[derive(Default)]
struct Headers {
    done: bool,
    /// A line was seen: the first one decides whether there is a header block at all.
    started: bool,
    field: Field,
    value: Vec<u8>,
    flags: String,
    keywords: Vec<String>,
    date: Option<i64>,
    seen_date: bool,
}

/// The first line of a header block: `Name:` with a name of printable ASCII, or the
/// empty line of an empty header.
fn starts_header(line: &[u8]) -> bool {
    if is_blank(line) {
        return true;
    }
    match line.iter().position(|&b| b == b':') {
        Some(colon) if colon > 0 => line[..colon].iter().all(|&b| (33..=126).contains(&b)),
        _ => false,
    }
}
/// Most bytes of one keywords header read (continuation lines included).
const MAX_KEYWORDS_HEADER: usize = 16 * 1024;

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |p| p + 1);
    &b[start..end.max(start)]
}

impl Headers {
    /// Takes one line (or the first [`MAX_SEPARATOR_LINE`] bytes of a longer one).
    fn line(&mut self, line: &[u8]) {
        if self.done {
            return;
        }
        if !std::mem::replace(&mut self.started, true) && !starts_header(line) {
            // No header block (a digest fragment, say): the message is all body, so
            // there is no header for the file to end inside of.
            self.done = true;
            return;
        }
        if is_blank(line) {
            self.flush();
            self.done = true;
            return;
        }
        if matches!(line[0], b' ' | b'\t') {
            let cap = if self.field == Field::Keywords {
                MAX_KEYWORDS_HEADER
            } else {
                512
            };
            if self.field != Field::Other && self.value.len() < cap {
                self.value.push(b' ');
                self.value.extend_from_slice(trim(line));
            }
            return;
        }
        self.flush();
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return;
        };
        let name = &line[..colon];
        self.field = if name.eq_ignore_ascii_case(b"status") {
            Field::Status
        } else if name.eq_ignore_ascii_case(b"x-status") {
            Field::XStatus
        } else if name.eq_ignore_ascii_case(b"x-mozilla-status") {
            Field::XMozillaStatus
        } else if name.eq_ignore_ascii_case(b"x-keywords") || name.eq_ignore_ascii_case(b"keywords")
        {
            Field::Keywords
        } else if name.eq_ignore_ascii_case(b"date") && !self.seen_date {
            Field::Date
        } else {
            Field::Other
        };
        if self.field != Field::Other {
            self.value.extend_from_slice(trim(&line[colon + 1..]));
        }
    }

    fn flush(&mut self) {
        let v = trim(&self.value);
        match self.field {
            Field::Other => {}
            // R read. O (old: seen by a client, not necessarily read) maps to nothing.
            Field::Status => {
                if v.contains(&b'R') {
                    self.flags.push('S');
                }
            }
            Field::XStatus => {
                for &b in v {
                    match b {
                        b'A' => self.flags.push('R'),
                        b'F' => self.flags.push('F'),
                        b'D' => self.flags.push('T'),
                        b'T' => self.flags.push('D'),
                        _ => {}
                    }
                }
            }
            Field::XMozillaStatus => {
                let bits = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| u16::from_str_radix(s, 16).ok())
                    .unwrap_or(0);
                for (bit, flag) in [(1, 'S'), (2, 'R'), (4, 'F'), (8, 'T')] {
                    if bits & bit != 0 {
                        self.flags.push(flag);
                    }
                }
            }
            Field::Keywords => {
                let text = String::from_utf8_lossy(v);
                for k in text.split(|c: char| c == ',' || c.is_ascii_whitespace()) {
                    if k.is_empty() || self.keywords.iter().any(|have| have == k) {
                        continue;
                    }
                    if let Err(why) = Flags::keyword_ok(k) {
                        tracing::warn!(keyword = k, reason = why, "mbox keyword left out");
                    } else if self.keywords.len() >= mailferry_core::MAX_KEYWORDS {
                        tracing::warn!(
                            keyword = k,
                            "mbox keyword left out: over 256 on one message"
                        );
                    } else {
                        self.keywords.push(k.to_string());
                    }
                }
            }
            Field::Date => {
                self.seen_date = true;
                self.date = std::str::from_utf8(v)
                    .ok()
                    .and_then(mail_parser::DateTime::parse_rfc822)
                    .map(|d| d.to_timestamp());
            }
        }
        self.field = Field::Other;
        self.value.clear();
    }
}

fn is_blank(line: &[u8]) -> bool {
    line == b"\n" || line == b"\r\n"
}

/// The message being split off.
struct Acc {
    start: u64,
    len: u64,
    size: u64,
    hasher: ring::digest::Context,
    unq: Unquoter,
    envelope: Envelope,
    headers: Headers,
}

impl Acc {
    fn new(start: u64, envelope: Envelope) -> Self {
        Acc {
            start,
            len: 0,
            size: 0,
            hasher: ring::digest::Context::new(&ring::digest::SHA256),
            unq: Unquoter::new(),
            envelope,
            headers: Headers::default(),
        }
    }

    /// Adds the next raw bytes of the message; `line_start`: they begin a line.
    fn commit(&mut self, bytes: &[u8], line_start: bool, scratch: &mut [u8]) {
        if line_start {
            self.headers.line(bytes);
        }
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        let mut rest = bytes;
        loop {
            let (c, p) = self.unq.step(rest, scratch);
            self.size += p as u64;
            rest = &rest[c..];
            if rest.is_empty() && p < scratch.len() {
                return;
            }
        }
    }
}

/// Splits an mbox into messages, reading it once with a fixed buffer. See
/// `docs/mbox.md` for the rules. An empty input is an mbox with no messages.
pub fn scan<R: Read>(mut r: R) -> Result<Vec<Scanned>, ScanError> {
    let mut s = Scanner::new();
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ScanError::Io(e)),
        };
        s.feed(&buf[..n])?;
    }
    s.finish()
}

struct Scanner {
    /// Bytes consumed so far (offset of the next byte).
    consumed: u64,
    /// The current line while it may still be a separator (at most
    /// [`MAX_SEPARATOR_LINE`] bytes).
    line: Vec<u8>,
    /// The current line is longer than that and is streaming into the message.
    long_line: bool,
    /// A blank line not yet given to the message: if a `From ` line follows, it belongs
    /// to the separator.
    held: Option<&'static [u8]>,
    prev_blank: bool,
    first: bool,
    cur: Option<Acc>,
    out: Vec<Scanned>,
    scratch: Vec<u8>,
}

impl Scanner {
    fn new() -> Self {
        Scanner {
            consumed: 0,
            line: Vec::with_capacity(MAX_SEPARATOR_LINE),
            long_line: false,
            held: None,
            prev_blank: false,
            first: true,
            cur: None,
            out: Vec::new(),
            scratch: vec![0u8; 64 * 1024],
        }
    }

    /// Commits the blank line held back, now that the line after it is known not to be
    /// a separator.
    fn release_held(&mut self) {
        if let Some(h) = self.held.take() {
            let acc = self
                .cur
                .as_mut()
                .expect("a message is open after the first line");
            acc.commit(h, true, &mut self.scratch);
        }
    }

    fn commit(&mut self, bytes: &[u8], line_start: bool) {
        self.release_held();
        let acc = self
            .cur
            .as_mut()
            .expect("a message is open after the first line");
        acc.commit(bytes, line_start, &mut self.scratch);
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<(), ScanError> {
        let mut i = 0;
        while i < chunk.len() {
            if self.long_line {
                let rest = &chunk[i..];
                let (n, nl) = match rest.iter().position(|&b| b == b'\n') {
                    Some(p) => (p + 1, true),
                    None => (rest.len(), false),
                };
                self.commit(&rest[..n], false);
                i += n;
                self.consumed += n as u64;
                if nl {
                    self.long_line = false;
                    self.prev_blank = false;
                }
                continue;
            }
            let want = MAX_SEPARATOR_LINE - self.line.len();
            let rest = &chunk[i..chunk.len().min(i + want)];
            match rest.iter().position(|&b| b == b'\n') {
                Some(p) => {
                    self.line.extend_from_slice(&rest[..=p]);
                    i += p + 1;
                    self.consumed += p as u64 + 1;
                    self.end_line()?;
                }
                None => {
                    self.line.extend_from_slice(rest);
                    i += rest.len();
                    self.consumed += rest.len() as u64;
                    if self.line.len() == MAX_SEPARATOR_LINE {
                        self.overflow()?;
                    }
                }
            }
        }
        Ok(())
    }

    fn is_separator(&self, line: &[u8]) -> bool {
        line.starts_with(WORD) && (self.prev_blank || parse_separator(line).date.is_some())
    }

    fn end_line(&mut self) -> Result<(), ScanError> {
        let line = std::mem::take(&mut self.line);
        if self.first {
            self.first = false;
            if !line.starts_with(WORD) {
                return Err(ScanError::NotMbox(
                    "the first line does not start with \"From \"".into(),
                ));
            }
            self.start_message(&line);
        } else if self.is_separator(&line) {
            // The blank line before a separator belongs to the separator.
            self.held = None;
            self.finish_message(false, false, false);
            self.start_message(&line);
        } else if is_blank(&line) {
            self.release_held();
            self.held = Some(if line.len() == 1 { b"\n" } else { b"\r\n" });
            self.prev_blank = true;
        } else {
            self.commit(&line, true);
            self.prev_blank = false;
        }
        self.line = line;
        self.line.clear();
        Ok(())
    }

    /// The current line reached [`MAX_SEPARATOR_LINE`] bytes without a newline.
    fn overflow(&mut self) -> Result<(), ScanError> {
        if self.first {
            return Err(ScanError::NotMbox(format!(
                "the first line is not a \"From \" line of at most {MAX_SEPARATOR_LINE} bytes"
            )));
        }
        let line = std::mem::take(&mut self.line);
        self.commit(&line, true);
        self.line = line;
        self.line.clear();
        self.long_line = true;
        Ok(())
    }

    fn start_message(&mut self, line: &[u8]) {
        self.cur = Some(Acc::new(self.consumed, parse_separator(line)));
        self.prev_blank = false;
    }

    fn finish(mut self) -> Result<Vec<Scanned>, ScanError> {
        if self.first {
            if self.line.is_empty() {
                return Ok(Vec::new());
            }
            if !self.line.starts_with(WORD) {
                return Err(ScanError::NotMbox(
                    "the file does not start with a \"From \" line".into(),
                ));
            }
            let line = std::mem::take(&mut self.line);
            self.start_message(&line);
            self.finish_message(true, true, false);
            return Ok(self.out);
        }
        let mut unterminated = self.long_line;
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            if self.is_separator(&line) {
                // The file ends inside a `From ` line: the message before it is whole.
                self.held = None;
                self.finish_message(false, false, false);
                self.start_message(&line);
                self.finish_message(true, true, false);
                return Ok(self.out);
            }
            self.commit(&line, true);
            unterminated = true;
        }
        let trailing_blank = self.held.take().is_some();
        self.finish_message(true, unterminated, trailing_blank);
        Ok(self.out)
    }

    fn finish_message(&mut self, last: bool, unterminated: bool, trailing_blank: bool) {
        let Some(mut acc) = self.cur.take() else {
            return;
        };
        acc.unq.finish();
        loop {
            let (_, p) = acc.unq.step(&[], &mut self.scratch);
            acc.size += p as u64;
            if p < self.scratch.len() {
                break;
            }
        }
        acc.headers.flush();
        let header_end = acc.headers.done;
        let problem = if acc.len == 0 && unterminated {
            Some("truncated: the file ends inside its \"From \" line")
        } else if acc.len == 0 && last {
            Some("truncated: the file ends right after its \"From \" line")
        } else if acc.len == 0 {
            Some("empty: a \"From \" line with no message after it")
        } else if unterminated {
            Some("truncated: the file ends in the middle of a line (no final newline)")
        } else if last && !header_end && !trailing_blank {
            Some("truncated: the file ends inside the header (no blank line after the header fields)")
        } else {
            None
        };
        let digest = acc.hasher.finish();
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(digest.as_ref());
        self.out.push(Scanned {
            start: acc.start,
            len: acc.len,
            size: acc.size,
            sha256,
            envelope: acc.envelope,
            date_header: acc.headers.date,
            flags: acc.headers.flags,
            keywords: acc.headers.keywords,
            problem: problem.map(str::to_string),
        });
    }
}

// === reading ===

/// Streams one message out of an mbox: `len` raw bytes from `inner` (positioned at the
/// message), unquoted on the fly. With `expect`, the raw bytes must hash to the digest
/// prefix the listing saw, or the last read fails (the file changed since it was listed).
pub struct MessageReader<R> {
    inner: R,
    left: u64,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    unq: Unquoter,
    hasher: Option<ring::digest::Context>,
    expect: Option<[u8; 8]>,
    eof: bool,
}

impl<R: Read> MessageReader<R> {
    /// A reader over the next `len` bytes of `inner`, using a `buf_size`-byte buffer.
    pub fn new(inner: R, len: u64, expect: Option<[u8; 8]>, buf_size: usize) -> Self {
        MessageReader {
            inner,
            left: len,
            buf: vec![0u8; buf_size.max(1)].into_boxed_slice(),
            pos: 0,
            end: 0,
            unq: Unquoter::new(),
            hasher: Some(ring::digest::Context::new(&ring::digest::SHA256)),
            expect,
            eof: false,
        }
    }
}

impl<R: Read> Read for MessageReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pos == self.end && !self.eof {
                let want = (self.buf.len() as u64).min(self.left) as usize;
                let n = if want == 0 {
                    0
                } else {
                    loop {
                        match self.inner.read(&mut self.buf[..want]) {
                            Ok(n) => break n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    }
                };
                if n == 0 {
                    self.eof = true;
                    self.unq.finish();
                } else {
                    if let Some(h) = self.hasher.as_mut() {
                        h.update(&self.buf[..n]);
                    }
                    self.left -= n as u64;
                    self.pos = 0;
                    self.end = n;
                }
            }
            let (c, p) = self.unq.step(&self.buf[self.pos..self.end], out);
            self.pos += c;
            if p > 0 {
                return Ok(p);
            }
            if self.eof && self.pos == self.end {
                if let (Some(h), Some(expect)) = (self.hasher.take(), self.expect) {
                    if h.finish().as_ref()[..8] != expect {
                        return Err(io::Error::other(
                            "the mbox file changed since it was listed (the message's bytes \
                             no longer match its id); run the move again",
                        ));
                    }
                }
                return Ok(0);
            }
        }
    }
}

// === the source ===

/// An mbox file, or a directory tree of them.
pub struct Mbox {
    root: PathBuf,
}

impl Mbox {
    /// An mbox source at `root` (a file or a directory; checked when listed).
    pub fn new(root: PathBuf) -> Self {
        Mbox { root }
    }
}

/// Lists one mbox file as `folder`.
fn list_file(path: &Path, folder: &FolderName, out: &mut Listing) -> Result<(), ScanError> {
    let file = fs::File::open(path).map_err(ScanError::Io)?;
    let meta = file.metadata().map_err(ScanError::Io)?;
    let mtime = mtime_secs(&meta);
    // What an MTA appends while we read is for the next pass.
    let found = scan(file.take(meta.len()))?;
    let mut dups: HashMap<(String, Option<String>), u32> = HashMap::new();
    for m in found {
        let (digest, sender) = id_parts(&m.sha256, m.envelope.sender.as_deref());
        let n = dups.entry((digest.clone(), sender.clone())).or_insert(0);
        *n += 1;
        let source_id = assemble_source_id(&digest, *n, sender.as_deref());
        if let Some(problem) = m.problem {
            out.note_bad(
                format!("{folder}/{source_id}"),
                format!(
                    "{problem} ({} bytes {}..{}); not moved",
                    path.display(),
                    m.start,
                    m.start + m.len
                ),
            );
            continue;
        }
        out.items.push(SourceItem {
            folder: folder.clone(),
            source_id,
            flags: Flags::new(&m.flags, &m.keywords).expect("letters and checked keywords"),
            internal_date: m.envelope.date.or(m.date_header).unwrap_or(mtime),
            size: m.size,
            location: Location::Range {
                path: path.to_path_buf(),
                start: m.start,
                len: m.len,
            },
            ident: None,
        });
    }
    Ok(())
}

/// Finds the mbox files under `dir`: (folder, file), or named bad items.
fn walk(
    dir: &Path,
    prefix: &[String],
    found: &mut BTreeMap<FolderName, PathBuf>,
    out: &mut Listing,
) {
    let rel = |name: &str| {
        let mut p = prefix.join("/");
        if !p.is_empty() {
            p.push('/');
        }
        p.push_str(name);
        p
    };
    let entries = match super::sorted_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            out.note_bad(
                if prefix.is_empty() {
                    dir.display().to_string()
                } else {
                    prefix.join("/")
                },
                format!("cannot list directory {}: {e}", dir.display()),
            );
            if let Ok(f) = FolderName::parse(&prefix.join("/")) {
                out.incomplete.insert(f);
            }
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                out.note_bad(prefix.join("/"), format!("directory listing failed: {e}"));
                continue;
            }
        };
        let os_name = entry.file_name();
        let Some(name) = os_name.to_str() else {
            out.note_bad(
                rel(&os_name.to_string_lossy()),
                "file name is not UTF-8; not moved",
            );
            continue;
        };
        if name.starts_with('.') {
            continue; // hidden: lock files, editor backups, .DS_Store
        }
        let kind = match entry.file_type() {
            Ok(t) => t,
            Err(e) => {
                out.note_bad(rel(name), format!("cannot stat: {e}"));
                continue;
            }
        };
        if kind.is_symlink() {
            out.note_bad(
                rel(name),
                "a symbolic link; not followed (point the source at the real files)",
            );
        } else if kind.is_dir() {
            // Thunderbird keeps the children of folder X in X.sbd/.
            let component = match name.strip_suffix(".sbd") {
                Some(base) if !base.is_empty() => base,
                _ => name,
            };
            let mut child = prefix.to_vec();
            child.push(component.to_string());
            if let Err(e) = FolderName::parse(&child.join("/")) {
                out.note_bad(rel(name), format!("directory not read: {e}"));
                continue;
            }
            walk(&entry.path(), &child, found, out);
        } else if kind.is_file() {
            if name.ends_with(".msf") {
                continue; // Thunderbird's summary index, not mail
            }
            let folder = match FolderName::parse(&rel(name)) {
                Ok(f) => f,
                Err(e) => {
                    out.note_bad(rel(name), format!("not moved: {e}"));
                    continue;
                }
            };
            if let Some(first) = found.get(&folder) {
                out.note_bad(
                    rel(name),
                    format!(
                        "{} is also folder {folder} (from {}); only that one is moved",
                        entry.path().display(),
                        first.display()
                    ),
                );
                continue;
            }
            found.insert(folder, entry.path());
        } else {
            out.note_bad(rel(name), "not a regular file or directory; not moved");
        }
    }
}

impl Source for Mbox {
    fn describe(&self) -> String {
        format!("mbox:{}", self.root.display())
    }

    fn list(&self, _prior: &dyn PriorLookup) -> Result<Listing, AgentError> {
        let root = &self.root;
        let fail = |reason: String| AgentError::Source {
            path: root.clone(),
            reason,
        };
        let meta = fs::metadata(root).map_err(|e| fail(format!("cannot read: {e}")))?;
        let mut out = Listing::default();
        if meta.is_file() {
            // A single mbox that is not one is a mistake in the command, not a bad item.
            list_file(root, &FolderName::inbox(), &mut out).map_err(|e| fail(e.to_string()))?;
            return Ok(out);
        }
        if !meta.is_dir() {
            return Err(fail("neither an mbox file nor a directory of them".into()));
        }
        let mut found = BTreeMap::new();
        walk(root, &[], &mut found, &mut out);
        for (folder, path) in found {
            let before = out.items.len();
            match list_file(&path, &folder, &mut out) {
                Ok(()) => {}
                Err(ScanError::NotMbox(why)) => {
                    out.note_bad(
                        folder.to_string(),
                        format!("{} is not an mbox ({why}); not moved", path.display()),
                    );
                    out.incomplete.insert(folder);
                }
                Err(e) => {
                    out.items.truncate(before);
                    out.note_bad(
                        folder.to_string(),
                        format!("{}: {e}; not moved", path.display()),
                    );
                    out.incomplete.insert(folder);
                }
            }
        }
        Ok(out)
    }

    fn open(&self, item: &SourceItem) -> io::Result<Box<dyn Read + Send>> {
        match &item.location {
            Location::Range { path, start, len } => {
                let mut f = fs::File::open(path)?;
                f.seek(SeekFrom::Start(*start))?;
                let expect = split_source_id(&item.source_id).map(|(d, _)| d);
                Ok(Box::new(MessageReader::new(f, *len, expect, 64 * 1024)))
            }
            other => Err(io::Error::other(format!(
                "an mbox item cannot be at {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
