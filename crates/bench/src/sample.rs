//! Deterministic synthetic Maildir++ trees for the demo, the tests and the benchmarks.
//!
//! [`generate`] produces the messages and hands them to a [`CorpusWriter`], so the same
//! corpus can be written in any source format; [`write_maildir`] is the Maildir++ writer.
//! It writes a mailbox that looks like one a real server keeps: nested and
//! non-ASCII folders (named on disk in IMAP modified UTF-7), `cur/` files with flags in their
//! names and `new/` files without, mtimes set to the delivery date, and RFC 5322 messages with
//! relay headers, encoded words, raw 8-bit headers, mixed line endings, quoted-printable and
//! base64 bodies, HTML alternatives, incompressible attachments and one duplicated
//! Message-ID. The `Realistic` size model reproduces the corpus in `PERF.md` (median ~7 KiB,
//! mean ~58 KiB), so throughput figures measured on it compare with the peers' figures.
//!
//! The same [`SampleSpec`] always gives a byte-identical tree (names, contents and mtimes):
//! everything comes from a SplitMix64 stream and integer arithmetic, never from the clock,
//! the environment or floating point.
//!
//! It is not a mail corpus: the text is word salad, every address and host uses reserved
//! example domains and documentation IP ranges, and nothing here ever reads real mail.
//! It does not fsync what it writes: a sample can always be written again.
//!
//! Folder names are written in IMAP modified UTF-7 with `mailferry_core::mutf7`, the codec
//! the Maildir reader decodes with.

use mailferry_core::calendar::Civil;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

#[cfg(test)]
mod tests;

/// What to generate. The same spec always writes the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleSpec {
    /// Seed of the pseudo-random stream; everything else derives from it.
    pub seed: u64,
    /// Number of message files to write.
    pub messages: usize,
    /// Number of folders, at least 1; INBOX is always the first. When `markers` is set, the
    /// marker folder comes on top of these.
    pub folders: usize,
    /// Distribution of message sizes and kinds.
    pub size: SizeModel,
    /// Strings to plant so tests can check that they never appear in plaintext elsewhere.
    pub markers: Option<Markers>,
}

/// Distribution of message sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeModel {
    /// The corpus of `PERF.md`: median ~7 KiB, mean ~58 KiB (within ±15 % from about 2,000
    /// messages on), one message at most ~8 MB. The largest 20 % are multipart/mixed with an
    /// incompressible base64 attachment; of the rest, a quarter are multipart/alternative
    /// text+HTML and the others plain text.
    Realistic,
    /// 1–12 KiB per message, same mix of kinds: for fast tests.
    Small,
    /// Every message about this many bytes (within a few percent; at least ~1.4 KB, the
    /// size of the headers), 60 % plain text, 20 % text+HTML alternative, 20 % with an
    /// incompressible attachment: the small-message benchmark (2,048 B) where the cost
    /// per message, not per byte, decides.
    Fixed(u32),
}

/// Strings planted in subjects, bodies, addresses and folder names so tests can grep the
/// encrypted volume for them.
///
/// One message (the last one) carries all four: `subject` raw (never encoded) in its
/// Subject, `body` on a line of its own in an unencoded text/plain body, `address` as its
/// From address (`address@example.net` when it has no `@`), and it lives in a folder named
/// `folder`. The folder name must not contain `.` (the Maildir++ separator) or control
/// characters; `/` nests it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Markers {
    /// Planted raw in one Subject header.
    pub subject: String,
    /// Planted in one text body.
    pub body: String,
    /// Planted as one From address.
    pub address: String,
    /// Name of an extra folder holding at least one message.
    pub folder: String,
}

/// What [`write_maildir`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleSummary {
    /// Message files written.
    pub messages: usize,
    /// Sum of the message files' sizes.
    pub bytes: u64,
    /// Median message size (the lower middle one for an even count; 0 for no message).
    pub median_bytes: u64,
    /// Folder paths as a Maildir source reports them: `/`-separated, decoded, INBOX first.
    pub folders: Vec<String>,
}

/// One generated message, as [`generate`] hands it to a [`CorpusWriter`].
#[derive(Debug)]
pub struct Generated<'a> {
    /// Position in the corpus, from 0.
    pub index: usize,
    /// Index of its folder in the list given to [`CorpusWriter::folders`].
    pub folder: usize,
    /// `Some(flags)` (Maildir letters, sorted, maybe empty) for a message that has been
    /// looked at; `None` for one that is still new.
    pub flags: Option<&'a str>,
    /// Delivery time (internal date), Unix seconds.
    pub time: u64,
    /// A name unique in the corpus, made of the delivery time, microseconds, process and
    /// index (`1672531200.M5P1234Q1.mailferry-sample`), as a delivery agent names files.
    pub unique: String,
    /// The RFC 5322 message.
    pub bytes: &'a [u8],
    /// True if its lines end in CRLF (about half of them), false for LF.
    pub crlf: bool,
}

/// Where generated messages go: a Maildir++ tree, a directory of mbox files, ...
pub trait CorpusWriter {
    /// Creates the folders, in this order (INBOX first); called once, before any message.
    fn folders(&mut self, names: &[String]) -> io::Result<()>;
    /// Writes one message.
    fn message(&mut self, msg: &Generated<'_>) -> io::Result<()>;
    /// Called after the last message.
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Generates the corpus of `spec` into `out`. Fails with `InvalidInput` if `folders` is 0
/// or a marker is unusable, or with whatever the writer fails with.
pub fn generate(spec: &SampleSpec, out: &mut dyn CorpusWriter) -> io::Result<SampleSummary> {
    if spec.folders == 0 {
        return Err(invalid("sample: folders must be at least 1 (INBOX)"));
    }
    if let Some(m) = &spec.markers {
        check_marker(m)?;
    }

    let mut folders: Vec<String> = (0..spec.folders).map(folder_name).collect();
    let marker_folder = spec.markers.as_ref().map(|m| {
        folders
            .iter()
            .position(|f| *f == m.folder)
            .unwrap_or_else(|| {
                folders.push(m.folder.clone());
                folders.len() - 1
            })
    });
    out.folders(&folders)?;

    let plans = plan(spec, &folders, marker_folder);
    let mut bytes = 0u64;
    let mut sizes = Vec::with_capacity(plans.len());
    for (i, p) in plans.iter().enumerate() {
        let mut rng = Rng::new(mix(spec.seed, i as u64 + 1));
        let msg = build_message(p, &folders[p.folder], spec, &mut rng);
        out.message(&Generated {
            index: i,
            folder: p.folder,
            flags: p.flags.as_deref(),
            time: p.time,
            unique: format!(
                "{}.M{}P{}Q{}.mailferry-sample",
                p.time,
                p.usec,
                p.pid,
                i + 1
            ),
            bytes: &msg,
            crlf: p.crlf,
        })?;
        bytes += msg.len() as u64;
        sizes.push(msg.len() as u64);
    }
    out.finish()?;
    sizes.sort_unstable();
    Ok(SampleSummary {
        messages: plans.len(),
        bytes,
        median_bytes: sizes
            .get(sizes.len().saturating_sub(1) / 2)
            .copied()
            .unwrap_or(0),
        folders,
    })
}

/// Writes a Maildir++ tree under `root` (created if absent; it should be empty).
///
/// INBOX is `root/{cur,new,tmp}`; every other folder is `root/.<name>/{cur,new,tmp}` plus a
/// `maildirfolder` file, with `/` in the name turned into `.` and non-ASCII encoded with
/// `mailferry_core::mutf7::encode`. About 70 % of the messages go to `cur/` with `:2,<flags>`, the rest to
/// `new/`. Fails with `InvalidInput` if `folders` is 0 or a marker is unusable.
pub fn write_maildir(root: &Path, spec: &SampleSpec) -> io::Result<SampleSummary> {
    generate(spec, &mut MaildirWriter::new(root))
}

/// The Maildir++ [`CorpusWriter`] of [`write_maildir`].
#[derive(Debug)]
pub struct MaildirWriter {
    root: PathBuf,
    dirs: Vec<PathBuf>,
}

impl MaildirWriter {
    /// A writer of a Maildir++ tree under `root` (created if absent; it should be empty).
    pub fn new(root: &Path) -> MaildirWriter {
        MaildirWriter {
            root: root.to_path_buf(),
            dirs: Vec::new(),
        }
    }
}

impl CorpusWriter for MaildirWriter {
    fn folders(&mut self, names: &[String]) -> io::Result<()> {
        for name in names {
            let dir = folder_dir(&self.root, name);
            for sub in ["cur", "new", "tmp"] {
                fs::create_dir_all(dir.join(sub))?;
            }
            if name != "INBOX" {
                // A fixed mtime keeps the whole tree identical between runs, not just the mail.
                fs::File::create(dir.join("maildirfolder"))?
                    .set_modified(UNIX_EPOCH + Duration::from_secs(EPOCH))?;
            }
            self.dirs.push(dir);
        }
        Ok(())
    }

    fn message(&mut self, m: &Generated<'_>) -> io::Result<()> {
        let msg = m.bytes;
        // W= is the RFC 822 (CRLF) size, which IMAP reports and Dovecot trusts.
        let vsize = if m.crlf {
            msg.len()
        } else {
            msg.len() + msg.iter().filter(|&&b| b == b'\n').count()
        };
        let base = format!("{},S={},W={}", m.unique, msg.len(), vsize);
        let path = match m.flags {
            Some(flags) => self.dirs[m.folder]
                .join("cur")
                .join(format!("{base}:2,{flags}")),
            None => self.dirs[m.folder].join("new").join(base),
        };
        let file = fs::File::create(&path)?;
        io::Write::write_all(&mut &file, msg)?;
        file.set_modified(UNIX_EPOCH + Duration::from_secs(m.time))
    }
}

/// Writes a directory of mboxrd files under `root` (created if absent; it should be
/// empty): the same messages as [`write_maildir`] for the same spec, in the layout the
/// mbox source reads and `mailferry export --format mbox` writes (`docs/mbox.md`).
///
/// One file per folder that has messages (`INBOX`, `Sent`, ...); a nested folder lives in
/// a directory named after its parent, `<parent>.sbd/` (Thunderbird's layout) when the
/// parent is a folder too. Every message gets a `From MAILER-DAEMON <date>` line with its
/// delivery date, `>From ` quoting (mboxrd) and a blank line after it. mbox has no flags
/// outside the message, so none are written.
pub fn write_mbox(root: &Path, spec: &SampleSpec) -> io::Result<SampleSummary> {
    generate(spec, &mut MboxWriter::new(root))
}

/// The mbox [`CorpusWriter`] of [`write_mbox`].
#[derive(Debug)]
pub struct MboxWriter {
    root: PathBuf,
    paths: Vec<PathBuf>,
    files: Vec<Option<io::BufWriter<fs::File>>>,
}

impl MboxWriter {
    /// A writer of mbox files under `root` (created if absent; it should be empty).
    pub fn new(root: &Path) -> MboxWriter {
        MboxWriter {
            root: root.to_path_buf(),
            paths: Vec::new(),
            files: Vec::new(),
        }
    }
}

impl CorpusWriter for MboxWriter {
    fn folders(&mut self, names: &[String]) -> io::Result<()> {
        fs::create_dir_all(&self.root)?;
        for name in names {
            let parts: Vec<&str> = name.split('/').collect();
            let mut path = self.root.clone();
            for (i, part) in parts.iter().enumerate() {
                let parent_is_folder =
                    i + 1 < parts.len() && names.contains(&parts[..=i].join("/"));
                if parent_is_folder {
                    path.push(format!("{part}.sbd"));
                } else {
                    path.push(part);
                }
            }
            self.paths.push(path);
            self.files.push(None);
        }
        Ok(())
    }

    fn message(&mut self, m: &Generated<'_>) -> io::Result<()> {
        use io::Write;
        use mailferry_agent::source::mbox;
        let w = match &mut self.files[m.folder] {
            Some(w) => w,
            slot => {
                let path = &self.paths[m.folder];
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent)?;
                }
                slot.insert(io::BufWriter::with_capacity(
                    256 * 1024,
                    fs::File::create(path)?,
                ))
            }
        };
        writeln!(w, "From MAILER-DAEMON {}", mbox::asctime(m.time as i64))?;
        let mut q = mbox::QuotingWriter::new(&mut *w);
        q.write_all(m.bytes)?;
        let (w, newline) = q.finish()?;
        // A message that does not end in a newline gets one: mbox cannot hold it otherwise.
        w.write_all(if newline { b"\n" } else { b"\n\n" })
    }

    fn finish(&mut self) -> io::Result<()> {
        for w in self.files.iter_mut().flatten() {
            io::Write::flush(w)?;
        }
        Ok(())
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_owned())
}

fn check_marker(m: &Markers) -> io::Result<()> {
    for (what, s) in [
        ("subject", &m.subject),
        ("body", &m.body),
        ("address", &m.address),
        ("folder", &m.folder),
    ] {
        if s.is_empty() || s.chars().any(char::is_control) {
            return Err(invalid(&format!(
                "sample: marker {what} {s:?} is empty or has control characters"
            )));
        }
    }
    let f = &m.folder;
    if f.contains('.') || f.starts_with('/') || f.ends_with('/') || f.contains("//") {
        return Err(invalid(&format!(
            "sample: marker folder {f:?} cannot be a Maildir++ folder (no '.', no empty level)"
        )));
    }
    if f.eq_ignore_ascii_case("INBOX") {
        return Err(invalid("sample: marker folder must not be INBOX"));
    }
    if m.address.contains(['<', '>', ' ', ',']) {
        return Err(invalid(&format!(
            "sample: marker address {:?} is not a bare address",
            m.address
        )));
    }
    Ok(())
}

/// Folder names in the order they are added as `folders` grows, so even three folders have
/// a non-ASCII one and a nested one.
const FOLDERS: &[&str] = &[
    "INBOX",
    "Entwürfe",
    "Archive/2024",
    "Sent",
    "Archive",
    "Trash",
    "Lists",
    "Lists/rust-users",
    "Projekte/日本語",
    "Spam",
    "Archive/2023",
    "Reçus",
];

fn folder_name(i: usize) -> String {
    match FOLDERS.get(i) {
        Some(name) => (*name).to_owned(),
        None => format!("Archive/{}", 2023 - (i - FOLDERS.len()) as i64 - 1),
    }
}

fn folder_dir(root: &Path, name: &str) -> PathBuf {
    if name == "INBOX" {
        root.to_path_buf()
    } else {
        // '/' and '.' are printable ASCII, so encoding the whole path and then swapping the
        // separator is the same as encoding level by level.
        root.join(format!(
            ".{}",
            mailferry_core::mutf7::encode(name).replace('/', ".")
        ))
    }
}

// === plan ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Alternative,
    Mixed,
}

struct Plan {
    folder: usize,
    kind: Kind,
    /// Wanted file size in bytes; the result lands within a few percent.
    target: usize,
    crlf: bool,
    /// `Some(flags)` for `cur/`, `None` for `new/`.
    flags: Option<String>,
    /// Delivery time (internal date), Unix seconds.
    time: u64,
    usec: u64,
    pid: u64,
    message_id: String,
    marker: bool,
}

/// Quantiles of the Realistic size distribution: (quantile in millionths, bytes). A
/// two-piece log-normal with median 7,168 B (sigma 0.85 below, 2.06 above), floored at
/// 1,400 B and capped at 8,000,000 B, sampled at these points; between them sizes are
/// interpolated linearly, which gives a mean of 59,392 B (58 KiB). Integers keep the tree
/// byte-identical across platforms, which `f64::exp` would not promise.
const REALISTIC_QUANTILES: &[(u64, u64)] = &[
    (0, 1400),
    (5000, 1400),
    (20000, 1400),
    (50000, 1771),
    (100000, 2412),
    (150000, 2970),
    (200000, 3505),
    (250000, 4040),
    (300000, 4590),
    (350000, 5166),
    (400000, 5779),
    (450000, 6442),
    (500000, 7168),
    (550000, 9284),
    (600000, 12076),
    (650000, 15846),
    (700000, 21099),
    (750000, 28738),
    (800000, 40541),
    (850000, 60545),
    (900000, 100286),
    (930000, 149594),
    (950000, 211872),
    (970000, 344373),
    (980000, 491665),
    (990000, 861792),
    (995000, 1440341),
    (997000, 2052149),
    (998000, 2684003),
    (999000, 4153333),
    (999500, 6273089),
    (999800, 8000000),
    (1000000, 8000000),
];

fn quantile_size(u_ppm: u64) -> u64 {
    let t = REALISTIC_QUANTILES;
    let j = t
        .partition_point(|&(u, _)| u <= u_ppm)
        .clamp(1, t.len() - 1);
    let ((u0, q0), (u1, q1)) = (t[j - 1], t[j]);
    q0 + (q1 - q0) * (u_ppm.min(u1) - u0) / (u1 - u0)
}

/// 2023-01-01T00:00:00Z; messages spread over the two years after it.
const EPOCH: u64 = 1_672_531_200;
const SPAN: u64 = 2 * 365 * 86_400;

fn plan(spec: &SampleSpec, folders: &[String], marker_folder: Option<usize>) -> Vec<Plan> {
    let n = spec.messages;
    let mut rng = Rng::new(mix(spec.seed, 0));
    // Stratified sampling: message i takes the quantile of stratum perm[i], so the sizes of
    // any sample of ~2,000 or more have the model's median and mean, not just on average.
    let mut perm: Vec<u64> = (0..n as u64).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        perm.swap(i, j);
    }
    let regular = folders.len() - usize::from(marker_folder.is_some_and(|m| m >= spec.folders));
    let pid = 1000 + rng.below(60_000);
    let host = rng.next_u64();

    let mut plans: Vec<Plan> = (0..n)
        .map(|i| {
            let (target, kind) = match spec.size {
                SizeModel::Realistic => {
                    let u = (perm[i] * 1_000_000 + rng.below(1_000_000)) / n as u64;
                    let kind = if u >= 800_000 {
                        Kind::Mixed
                    } else if rng.chance(25) {
                        Kind::Alternative
                    } else {
                        Kind::Plain
                    };
                    (quantile_size(u) as usize, kind)
                }
                SizeModel::Small | SizeModel::Fixed(_) => {
                    let kind = match rng.below(100) {
                        0..60 => Kind::Plain,
                        60..80 => Kind::Alternative,
                        _ => Kind::Mixed,
                    };
                    let target = match spec.size {
                        SizeModel::Fixed(b) => b as usize,
                        _ => rng.range(1024, 12 * 1024) as usize,
                    };
                    (target, kind)
                }
            };
            let folder = if regular == 1 || rng.chance(45) {
                0
            } else {
                1 + rng.below(regular as u64 - 1) as usize
            };
            let time = EPOCH + SPAN * i as u64 / n as u64 + rng.below((SPAN / n as u64).max(1));
            Plan {
                folder,
                kind,
                target,
                crlf: rng.chance(50),
                flags: None,
                time,
                usec: rng.below(1_000_000),
                // Mostly one delivery process, sometimes another, as on a real server.
                pid: if rng.chance(80) {
                    pid
                } else {
                    1000 + rng.below(60_000)
                },
                message_id: format!(
                    "<{:016x}.{}.{:x}@{}>",
                    rng.next_u64(),
                    i,
                    host & 0xffff,
                    rng.pick(MSGID_HOSTS)
                ),
                marker: false,
            }
        })
        .collect();

    // Exactly one pair shares a Message-ID, in two folders when there are two, with
    // different content (a resend): dedup must key on content, not on the header alone.
    if n >= 2 {
        let (a, b) = (0, n / 2);
        plans[b].message_id = plans[a].message_id.clone();
        if regular > 1 && plans[b].folder == plans[a].folder {
            plans[b].folder = (plans[a].folder + 1) % regular;
        }
    }
    if let (Some(mf), Some(last)) = (marker_folder, plans.last_mut()) {
        last.folder = mf;
        last.kind = Kind::Plain;
        last.target = last.target.min(64 * 1024);
        last.marker = true;
    }

    for p in &mut plans {
        if !rng.chance(70) {
            continue;
        }
        let name = folders[p.folder].as_str();
        let mut flags = String::new();
        if name == "Entwürfe" {
            flags.push('D');
        }
        if rng.chance(8) {
            flags.push('F');
        }
        let seen = name == "Sent" || rng.chance(85);
        if seen && rng.chance(15) {
            flags.push('R');
        }
        if seen {
            flags.push('S');
        }
        if name == "Trash" {
            flags.push('T');
        }
        p.flags = Some(flags);
    }
    plans
}

// === build a message ===

const OWNER: (&str, &str) = ("Kim Beispiel", "kim@example.org");

/// Display name and ASCII address of correspondents; some names are not Latin-1 so they
/// must be B-encoded.
const PEOPLE: &[(&str, &str)] = &[
    ("Alice Smith", "alice.smith@example.com"),
    ("Bob Jones", "bob@example.net"),
    ("Carol Nguyen", "carol.nguyen@firma.example"),
    ("David Brown", "d.brown@example.com"),
    ("Eve Martin", "eve@lists.example.org"),
    ("Jürgen Müller", "juergen.mueller@firma.example"),
    ("Zoë Lefèvre", "zoe.lefevre@example.net"),
    ("José García", "jose.garcia@example.com"),
    ("Ørjan Åsheim", "orjan@example.net"),
    ("François Dubois", "f.dubois@example.org"),
    ("Łukasz Wiśniewski", "lukasz.w@example.com"),
    ("山田 太郎", "yamada@example.jp"),
    ("Иван Петров", "ivan.petrov@example.net"),
    ("Priya Raman", "priya@example.org"),
    ("Mei Chen", "mei.chen@example.com"),
    ("Tomás Ó Briain", "tomas@example.net"),
];

const MSGID_HOSTS: &[&str] = &[
    "mail.example.org",
    "mx.example.net",
    "smtp.firma.example",
    "example.com",
];

const RELAYS: &[&str] = &[
    "mail-out.example.com",
    "smtp.example.net",
    "relay.firma.example",
    "lists.example.org",
];

const MAILERS: &[&str] = &[
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.6.0",
    "X-Mailer: Microsoft Outlook 16.0",
    "X-Mailer: Apple Mail (2.3731.700.6)",
    "User-Agent: Mutt/2.2.12 (2023-09-09)",
];

const SUBJECTS: &[&str] = &[
    "Quarterly report",
    "Meeting notes",
    "Your order has shipped",
    "[rust-users] Question about lifetimes",
    "Project timeline",
    "Lunch on Friday?",
    "Build failed: main",
    "Weekly status update",
    "Server migration plan",
    "Invoice for March",
    "Besprechung nächste Woche",
    "Änderungen am Angebot für Q3",
    "Réunion de suivi – budget",
    "Grüße aus München",
    "会議の議事録",
    "Übersicht der Rückmeldungen",
    "Привет из Москвы",
    "Café à 10h ?",
    "Año nuevo – planificación",
    "Ørestad kontor: nøgler",
];

const WORDS: &[&str] = &[
    "the",
    "meeting",
    "project",
    "report",
    "budget",
    "schedule",
    "review",
    "update",
    "please",
    "thanks",
    "attached",
    "draft",
    "proposal",
    "team",
    "customer",
    "invoice",
    "deadline",
    "release",
    "server",
    "migration",
    "mailbox",
    "folder",
    "backup",
    "and",
    "to",
    "of",
    "in",
    "we",
    "will",
    "with",
    "on",
    "for",
    "is",
    "a",
    "this",
    "that",
    "it",
    "be",
    "as",
    "at",
    "by",
    "from",
    "can",
    "not",
    "have",
    "are",
    "our",
    "you",
    "your",
    "new",
    "next",
    "week",
    "today",
    "tomorrow",
    "data",
    "plan",
    "notes",
    "question",
    "answer",
    "issue",
    "fix",
    "test",
    "version",
    "config",
    "Bericht",
    "Termin",
    "bitte",
    "danke",
    "Woche",
    "und",
    "der",
    "die",
    "das",
];

const WORDS_8BIT: &[&str] = &[
    "für",
    "Grüße",
    "Änderung",
    "Übersicht",
    "Rückmeldung",
    "Straße",
    "café",
    "réunion",
    "déjà",
    "naïve",
    "año",
    "señor",
    "smörgåsbord",
    "über",
    "日本",
    "会議",
    "资料",
    "Привет",
    "данные",
];

struct Attachment {
    mime: &'static str,
    name: &'static str,
    magic: &'static [u8],
}

const ATTACHMENTS: &[Attachment] = &[
    Attachment {
        mime: "application/pdf",
        name: "Rechnung_2024.pdf",
        magic: b"%PDF-1.7\n",
    },
    Attachment {
        mime: "image/jpeg",
        name: "IMG_2041.jpg",
        magic: &[0xff, 0xd8, 0xff, 0xe0],
    },
    Attachment {
        mime: "application/zip",
        name: "logs.zip",
        magic: b"PK\x03\x04",
    },
    Attachment {
        mime: "image/png",
        name: "Bildschirmfoto.png",
        magic: b"\x89PNG\r\n\x1a\n",
    },
    Attachment {
        mime: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        name: "Übersicht März.xlsx",
        magic: b"PK\x03\x04",
    },
    Attachment {
        mime: "application/pdf",
        name: "Протокол.pdf",
        magic: b"%PDF-1.5\n",
    },
];

#[derive(Clone, Copy)]
enum Cte {
    SevenBit,
    EightBit,
    QuotedPrintable,
    Base64,
}

impl Cte {
    fn name(self) -> &'static str {
        match self {
            Cte::SevenBit => "7bit",
            Cte::EightBit => "8bit",
            Cte::QuotedPrintable => "quoted-printable",
            Cte::Base64 => "base64",
        }
    }

    /// Raw bytes that encode to about `budget` bytes.
    fn raw_for(self, budget: usize) -> usize {
        match self {
            Cte::SevenBit | Cte::EightBit => budget,
            Cte::QuotedPrintable => budget * 100 / 106,
            Cte::Base64 => budget * 57 / 77,
        }
    }

    fn encode(self, text: &str) -> String {
        match self {
            Cte::SevenBit | Cte::EightBit => text.to_owned(),
            Cte::QuotedPrintable => qp_encode(text),
            Cte::Base64 => b64_lines(text.as_bytes()),
        }
    }
}

/// Builds the message with LF line ends, then turns them into CRLF for half the messages.
fn build_message(p: &Plan, folder: &str, spec: &SampleSpec, rng: &mut Rng) -> Vec<u8> {
    let marker = if p.marker {
        spec.markers.as_ref()
    } else {
        None
    };
    let sent = folder == "Sent";
    let correspondent = *rng.pick(PEOPLE);
    let (from, mut to) = if sent {
        (OWNER, vec![correspondent])
    } else {
        (correspondent, vec![OWNER])
    };
    let from_addr: String = match marker {
        Some(m) if m.address.contains('@') => m.address.clone(),
        Some(m) => format!("{}@example.net", m.address),
        None => from.1.to_owned(),
    };
    for _ in 0..rng.below(3) {
        to.push(*rng.pick(PEOPLE));
    }
    let cc: Vec<_> = if rng.chance(30) {
        (0..1 + rng.below(2)).map(|_| *rng.pick(PEOPLE)).collect()
    } else {
        Vec::new()
    };
    let reply = rng.chance(30);
    let subject = match marker {
        Some(m) => format!("Re: {} status", m.subject),
        None => {
            let base = rng.pick(SUBJECTS);
            if reply {
                format!("Re: {base}")
            } else if rng.chance(15) {
                format!("Fwd: {base}")
            } else {
                format!("{base} #{}", rng.range(2, 9999))
            }
        }
    };

    let mut h = String::with_capacity(2048);
    let recv_date = rfc5322_date(p.time, *rng.pick(&[60i64, 60, 120, 0, -300, 540]));
    let sent_date = rfc5322_date(
        p.time - rng.range(3, 600),
        *rng.pick(&[60i64, 120, 0, -300, -420, 330, 540]),
    );
    let _ = writeln!(h, "Return-Path: <{from_addr}>");
    let relay = rng.pick(RELAYS);
    let _ = writeln!(
        h,
        "Received: from {relay} ({relay} [192.0.2.{}])\n\tby mx.example.org (Postfix) with ESMTPS id {:010X}\n\tfor <{}>; {recv_date}",
        rng.range(1, 254),
        rng.next_u64() & 0xff_ffff_ffff,
        to[0].1
    );
    if rng.chance(60) {
        let _ = writeln!(
            h,
            "Received: from [198.51.100.{}] (unknown [198.51.100.{0}])\n\tby {relay} (Postfix) with ESMTPSA id {:08X};\n\t{recv_date}",
            rng.range(1, 254),
            rng.next_u64() & 0xffff_ffff,
        );
    }
    let _ = writeln!(h, "Date: {sent_date}");
    let _ = writeln!(h, "From: {}", mailbox(rng, from.0, &from_addr));
    let to_list: Vec<String> = to.iter().map(|(n, a)| mailbox(rng, n, a)).collect();
    let _ = writeln!(h, "To: {}", to_list.join(",\n "));
    if !cc.is_empty() {
        let cc_list: Vec<String> = cc.iter().map(|(n, a)| mailbox(rng, n, a)).collect();
        let _ = writeln!(h, "Cc: {}", cc_list.join(",\n "));
    }
    let subject = if marker.is_some() {
        subject
    } else {
        header_text(rng, &subject)
    };
    let _ = writeln!(h, "Subject: {subject}");
    let _ = writeln!(h, "Message-ID: {}", p.message_id);
    if reply && marker.is_none() {
        let parent = format!("<{:016x}@{}>", rng.next_u64(), rng.pick(MSGID_HOSTS));
        let _ = writeln!(h, "In-Reply-To: {parent}\nReferences: {parent}");
    }
    if rng.chance(60) {
        let _ = writeln!(h, "{}", rng.pick(MAILERS));
    }
    let _ = writeln!(h, "MIME-Version: 1.0");

    let budget = p.target.saturating_sub(h.len() + 80).max(200);
    let body = match (p.kind, marker) {
        (_, Some(m)) => {
            let half = text(rng, budget / 2);
            let text = format!("{half}\n{}\n\n{}", m.body, text(rng, budget / 2));
            let cte = if text.is_ascii() {
                Cte::SevenBit
            } else {
                Cte::EightBit
            };
            text_part(&text, "text/plain", cte)
        }
        (Kind::Plain, None) => {
            let cte = pick_cte(rng, false);
            let text = signed(rng, cte.raw_for(budget), from.0);
            text_part(&text, "text/plain", cte)
        }
        (Kind::Alternative, None) => alternative(rng, budget, from.0),
        (Kind::Mixed, None) => mixed(rng, budget, from.0, spec.size),
    };
    let mut msg = h;
    msg.push_str(&body);
    if p.crlf {
        msg = msg.replace('\n', "\r\n");
    }
    msg.into_bytes()
}

fn pick_cte(rng: &mut Rng, html: bool) -> Cte {
    match rng.below(100) {
        0..10 => Cte::Base64,
        10..50 if !html => Cte::EightBit,
        _ => Cte::QuotedPrintable,
    }
}

/// Headers (Content-Type, Content-Transfer-Encoding), blank line, encoded body. 8-bit and
/// 7-bit transfer encodings are chosen by content, so ASCII text never claims 8bit.
fn text_part(text: &str, mime: &str, cte: Cte) -> String {
    let cte = match cte {
        Cte::SevenBit | Cte::EightBit if text.is_ascii() => Cte::SevenBit,
        Cte::SevenBit => Cte::EightBit,
        other => other,
    };
    let charset = if text.is_ascii() && mime == "text/plain" {
        "us-ascii"
    } else {
        "UTF-8"
    };
    format!(
        "Content-Type: {mime}; charset={charset}\nContent-Transfer-Encoding: {}\n\n{}",
        cte.name(),
        cte.encode(text)
    )
}

fn alternative(rng: &mut Rng, budget: usize, sender: &str) -> String {
    let boundary = format!("----=_Part_{:016x}", rng.next_u64());
    // The HTML rendering is about 1.3 times the text, both quoted-printable or similar.
    let text_raw = budget.saturating_sub(700) * 100 / 245;
    let plain_cte = pick_cte(rng, false);
    let html_cte = pick_cte(rng, true);
    let text = signed(rng, plain_cte.raw_for(text_raw), sender);
    let html = to_html(&text);
    format!(
        "Content-Type: multipart/alternative;\n boundary=\"{boundary}\"\n\n\
         This is a multi-part message in MIME format.\n\n\
         --{boundary}\n{}\n--{boundary}\n{}\n--{boundary}--\n",
        text_part(&text, "text/plain", plain_cte),
        text_part(&html, "text/html", html_cte),
    )
}

fn mixed(rng: &mut Rng, budget: usize, sender: &str, model: SizeModel) -> String {
    let boundary = format!("----=_Part_{:016x}", rng.next_u64());
    let text_budget = match model {
        SizeModel::Realistic => rng.range(300, 4000) as usize,
        SizeModel::Small | SizeModel::Fixed(_) => rng.range(150, 800) as usize,
    }
    .min(budget / 3);
    let cte = pick_cte(rng, false);
    let text = signed(rng, cte.raw_for(text_budget), sender);
    let mut out = format!(
        "Content-Type: multipart/mixed;\n boundary=\"{boundary}\"\n\n\
         This is a multi-part message in MIME format.\n\n--{boundary}\n{}\n",
        text_part(&text, "text/plain", cte)
    );
    let count = if budget > 200_000 && rng.chance(30) {
        2
    } else {
        1
    };
    let rest = budget.saturating_sub(out.len() + 300 * count);
    let first = if count == 2 {
        rest * rng.range(20, 80) as usize / 100
    } else {
        rest
    };
    for share in [first, rest - first].into_iter().take(count) {
        let a = rng.pick(ATTACHMENTS);
        let mut raw = vec![0u8; (share * 57 / 77).max(a.magic.len() + 16)];
        rng.fill(&mut raw);
        raw[..a.magic.len()].copy_from_slice(a.magic);
        let (ct_name, disposition) = filename_params(rng, a.name);
        let _ = write!(
            out,
            "--{boundary}\nContent-Type: {};\n {ct_name}\nContent-Disposition: attachment;\n {disposition}\nContent-Transfer-Encoding: base64\n\n{}\n",
            a.mime,
            b64_lines(&raw)
        );
    }
    let _ = writeln!(out, "--{boundary}--");
    out
}

/// `name=` and `filename=` parameters: ASCII quoted; non-ASCII either as RFC 2231
/// `filename*=UTF-8''...` or as the RFC 2047 encoded word that Outlook and Gmail send.
fn filename_params(rng: &mut Rng, name: &str) -> (String, String) {
    if name.is_ascii() {
        (format!("name=\"{name}\""), format!("filename=\"{name}\""))
    } else if rng.chance(50) {
        let mut pct = String::new();
        for b in name.bytes() {
            if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                pct.push(b as char);
            } else {
                let _ = write!(pct, "%{b:02X}");
            }
        }
        (
            format!("name*=UTF-8''{pct}"),
            format!("filename*=UTF-8''{pct}"),
        )
    } else {
        let ew = encoded_words_b(name).replace("\n ", " ");
        (format!("name=\"{ew}\""), format!("filename=\"{ew}\""))
    }
}

/// `Name <addr>` with the name plain, quoted, B- or Q-encoded, or raw UTF-8.
fn mailbox(rng: &mut Rng, name: &str, addr: &str) -> String {
    if name.is_ascii() {
        return if rng.chance(50) {
            format!("{name} <{addr}>")
        } else {
            format!("\"{name}\" <{addr}>")
        };
    }
    match rng.below(10) {
        0..4 => format!("{} <{addr}>", encoded_words_b(name)),
        4..7 => match encoded_words_q_latin1(name) {
            Some(q) => format!("{q} <{addr}>"),
            None => format!("{} <{addr}>", encoded_words_b(name)),
        },
        _ => format!("\"{name}\" <{addr}>"),
    }
}

/// Unstructured header text: ASCII as is; otherwise B-, Q- or raw 8-bit UTF-8.
fn header_text(rng: &mut Rng, s: &str) -> String {
    if s.is_ascii() {
        return s.to_owned();
    }
    match rng.below(10) {
        0..4 => encoded_words_b(s),
        4..7 => encoded_words_q_latin1(s).unwrap_or_else(|| encoded_words_b(s)),
        _ => s.to_owned(),
    }
}

/// RFC 2047 B encoding in UTF-8, split on character boundaries so every word stays within
/// 75 characters, folded between words.
fn encoded_words_b(s: &str) -> String {
    let mut words = Vec::new();
    let mut start = 0;
    let mut end = 0;
    for (i, c) in s.char_indices() {
        if i + c.len_utf8() - start > 45 {
            words.push(&s[start..end]);
            start = i;
        }
        end = i + c.len_utf8();
    }
    words.push(&s[start..end]);
    words
        .iter()
        .map(|w| format!("=?UTF-8?B?{}?=", b64(w.as_bytes(), B64_STD, true)))
        .collect::<Vec<_>>()
        .join("\n ")
}

/// RFC 2047 Q encoding in ISO-8859-1, or `None` if `s` has characters outside Latin-1.
fn encoded_words_q_latin1(s: &str) -> Option<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    for c in s.chars() {
        let code = u32::from(c);
        if code > 0xff {
            return None;
        }
        let tok = match c {
            ' ' => "_".to_owned(),
            c if c.is_ascii_alphanumeric() || "!*+-/".contains(c) => c.to_string(),
            _ => format!("={code:02X}"),
        };
        if cur.len() + tok.len() > 58 {
            words.push(std::mem::take(&mut cur));
        }
        cur.push_str(&tok);
    }
    words.push(cur);
    Some(
        words
            .iter()
            .map(|w| format!("=?ISO-8859-1?Q?{w}?="))
            .collect::<Vec<_>>()
            .join("\n "),
    )
}

/// Word-salad paragraphs of about `bytes` bytes, lines under 73 columns, ending in LF.
fn text(rng: &mut Rng, bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 80);
    let mut line = String::new();
    let mut sentence_start = true;
    while out.len() + line.len() < bytes {
        let w = if rng.chance(6) {
            rng.pick(WORDS_8BIT)
        } else {
            rng.pick(WORDS)
        };
        let mut word = if sentence_start {
            let mut cs = w.chars();
            cs.next()
                .map(|c| c.to_uppercase().chain(cs).collect())
                .unwrap_or_default()
        } else {
            (*w).to_owned()
        };
        sentence_start = rng.chance(9);
        if sentence_start {
            word.push('.');
        }
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > 72 {
            out.push_str(&line);
            out.push('\n');
            if line.ends_with('.') && rng.chance(25) {
                out.push('\n');
            }
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn signed(rng: &mut Rng, bytes: usize, sender: &str) -> String {
    let greeting = rng.pick(&["Hi,", "Hallo zusammen,", "Bonjour,", "Dear all,"]);
    let closing = rng.pick(&["Best regards,", "Viele Grüße", "Cordialement,", "Thanks,"]);
    let body = text(rng, bytes.saturating_sub(80 + sender.len()));
    format!("{greeting}\n\n{body}\n{closing}\n{sender}\n\n-- \n{sender}\n")
}

fn to_html(text: &str) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\">\n</head>\n<body style=\"font-family: Arial, sans-serif; font-size: 11pt;\">\n",
    );
    for para in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
        out.push_str("<p>");
        for (i, line) in para.lines().enumerate() {
            if i > 0 {
                out.push_str("<br>\n");
            }
            for c in line.chars() {
                match c {
                    '<' => out.push_str("&lt;"),
                    '>' => out.push_str("&gt;"),
                    '&' => out.push_str("&amp;"),
                    c => out.push(c),
                }
            }
        }
        out.push_str("</p>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// Quoted-printable (RFC 2045 §6.7) of LF-separated text: soft breaks keep lines within
/// 76 characters; trailing blanks are encoded so transports cannot eat them.
fn qp_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 106 / 100 + 16);
    for (n, line) in text.split('\n').enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let bytes = line.as_bytes();
        let mut col = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let last = i + 1 == bytes.len();
            let literal = (b'!'..=b'~').contains(&b) && b != b'=' || (b == b' ' && !last);
            let width = if literal { 1 } else { 3 };
            // Leave room for the '=' of a soft break unless this is the line's last token.
            if col + width > if last { 76 } else { 75 } {
                out.push_str("=\n");
                col = 0;
            }
            if literal {
                out.push(b as char);
            } else {
                let _ = write!(out, "={b:02X}");
            }
            col += width;
        }
    }
    out
}

const B64_STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        let chars = chunk.len() + 1;
        for k in 0..4 {
            if k < chars {
                out.push(alphabet[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Base64 in 76-character lines, each ending in LF.
fn b64_lines(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() / 57 * 78 + 80);
    for chunk in bytes.chunks(57) {
        out.push_str(&b64(chunk, B64_STD, true));
        out.push('\n');
    }
    out
}

/// `Tue, 5 Mar 2024 10:12:03 +0100` for Unix time `t` seen from UTC offset `tz_min`.
///
/// The calendar is `mailferry_core::calendar`'s; only the RFC 5322 layout is ours.
fn rfc5322_date(t: u64, tz_min: i64) -> String {
    let local = Civil::from_unix(t as i64 + tz_min * 60);
    let sign = if tz_min < 0 { '-' } else { '+' };
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} {sign}{:02}{:02}",
        local.weekday_abbrev(),
        local.day,
        local.month_abbrev(),
        local.year,
        local.hour,
        local.minute,
        local.second,
        tz_min.abs() / 60,
        tz_min.abs() % 60
    )
}

// === PRNG ===

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and fixed forever, unlike a crate's
/// generator whose stream may change between versions.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-40 for our `n`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Independent stream per (seed, index), so one message's draws never shift another's.
fn mix(seed: u64, i: u64) -> u64 {
    Rng::new(seed ^ i.wrapping_mul(0xd1b5_4a32_d192_ed03)).next_u64()
}

// === modified UTF-7 ===
