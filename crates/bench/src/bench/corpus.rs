//! Each case's corpus: the work directory it lives in, written once per case with
//! [`crate::sample`] (or reused from `--keep`), read into the page cache before the runs,
//! and served by a scratch Dovecot for `--source imap`. Nothing here is timed.

use super::plan::CaseSpec;
use super::report::{Corpus, CorpusMailbox};
use super::{source_name, BenchArgs, SourceKind};
use crate::sample::{
    self, CorpusWriter, Generated, MaildirWriter, MboxWriter, SampleSpec, SizeModel,
};
use crate::AppError;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The temp directory, or the one given with `--keep`.
pub(super) enum WorkDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl WorkDir {
    pub(super) fn new(keep: Option<&Path>) -> Result<WorkDir, AppError> {
        match keep {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| AppError::io(dir, e))?;
                Ok(WorkDir::Kept(dir.to_path_buf()))
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("mailferry-bench-")
                    .tempdir()
                    .map_err(|e| AppError::io(&std::env::temp_dir(), e))?;
                Ok(WorkDir::Temp(t))
            }
        }
    }

    pub(super) fn path(&self) -> &Path {
        match self {
            WorkDir::Temp(t) => t.path(),
            WorkDir::Kept(p) => p,
        }
    }
}

fn model_name(model: SizeModel) -> String {
    match model {
        SizeModel::Realistic => "realistic".into(),
        SizeModel::Small => "small".into(),
        SizeModel::Fixed(b) => format!("fixed {b} B"),
    }
}

pub(super) fn corpus_dir(
    work: &Path,
    case: &CaseSpec,
    model: SizeModel,
    args: &BenchArgs,
) -> PathBuf {
    let model = match model {
        SizeModel::Fixed(b) => format!("fixed{b}"),
        m => model_name(m),
    };
    work.join("corpus").join(format!(
        "{}-{model}-{}msg-{}mb-{}f-seed{}",
        source_name(args.source),
        case.messages,
        case.mailboxes,
        case.folders,
        args.seed
    ))
}

/// Records message sizes on the way to the real writer.
struct Tally<'a> {
    inner: &'a mut dyn CorpusWriter,
    sizes: &'a mut Vec<u64>,
}

impl CorpusWriter for Tally<'_> {
    fn folders(&mut self, names: &[String]) -> std::io::Result<()> {
        self.inner.folders(names)
    }
    fn message(&mut self, msg: &Generated<'_>) -> std::io::Result<()> {
        self.sizes.push(msg.bytes.len() as u64);
        self.inner.message(msg)
    }
    fn finish(&mut self) -> std::io::Result<()> {
        self.inner.finish()
    }
}

/// Writes the case's corpus, or reuses a complete one left by `--keep`.
pub(super) fn ensure_corpus(
    work: &Path,
    case: &CaseSpec,
    model: SizeModel,
    args: &BenchArgs,
) -> Result<Corpus, AppError> {
    let dir = corpus_dir(work, case, model, args);
    let done = dir.join("corpus.json");
    if let Ok(bytes) = std::fs::read(&done) {
        if let Ok(mut c) = serde_json::from_slice::<Corpus>(&bytes) {
            c.generate_seconds = 0.0;
            return Ok(c);
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| AppError::io(&dir, e))?;
    }
    if args.progress {
        eprintln!(
            "bench: writing the corpus of {} in {}",
            case.name,
            dir.display()
        );
    }
    let t0 = Instant::now();
    let mut sizes = Vec::with_capacity(case.messages);
    let mut mailboxes = Vec::new();
    for i in 0..case.mailboxes {
        // An even split; the first mailboxes take the remainder.
        let n = case.messages / case.mailboxes + usize::from(i < case.messages % case.mailboxes);
        let path = dir.join(format!("mailbox-{i}"));
        let spec = SampleSpec {
            seed: args.seed.wrapping_add(i as u64),
            messages: n,
            folders: case.folders,
            size: model,
            markers: None,
        };
        let (mut maildir, mut mbox);
        let inner: &mut dyn CorpusWriter = match args.source {
            SourceKind::Mbox => {
                mbox = MboxWriter::new(&path);
                &mut mbox
            }
            _ => {
                maildir = MaildirWriter::new(&path);
                &mut maildir
            }
        };
        let summary = sample::generate(
            &spec,
            &mut Tally {
                inner,
                sizes: &mut sizes,
            },
        )
        .map_err(|e| AppError::io(&path, e))?;
        mailboxes.push(CorpusMailbox {
            address: format!("bench{i}@example.com"),
            path,
            messages: summary.messages as u64,
            bytes: summary.bytes,
        });
    }
    sizes.sort_unstable();
    let bytes: u64 = sizes.iter().sum();
    let corpus = Corpus {
        format: args.source,
        model: model_name(model),
        seed: args.seed,
        messages: sizes.len() as u64,
        bytes,
        median_bytes: sizes
            .get(sizes.len().saturating_sub(1) / 2)
            .copied()
            .unwrap_or(0),
        mean_bytes: bytes / (sizes.len() as u64).max(1),
        folders: case.folders,
        generate_seconds: t0.elapsed().as_secs_f64(),
        mailboxes,
    };
    // Written last: its presence means the corpus is complete.
    let json = serde_json::to_vec_pretty(&corpus).expect("corpus serializes");
    std::fs::write(&done, json).map_err(|e| AppError::io(&done, e))?;
    Ok(corpus)
}

/// The scratch Dovecot of `--source imap`: the Maildir corpus's mailboxes are its users.
pub(super) struct ImapServer {
    dovecot: crate::dovecot::Dovecot,
}

impl ImapServer {
    /// Serves `corpus` (a Maildir corpus: `<dir>/mailbox-<i>`, user `mailbox-<i>`) and
    /// builds Dovecot's indexes, so the runs time serving, not Dovecot's first scan.
    pub(super) fn start(corpus: &Corpus, progress: bool) -> Result<ImapServer, AppError> {
        let root = corpus
            .mailboxes
            .first()
            .and_then(|m| m.path.parent())
            .ok_or_else(|| AppError::Failed("the corpus has no mailbox".into()))?
            .to_path_buf();
        let users: Vec<String> = corpus.mailboxes.iter().map(Self::user).collect();
        let names: Vec<&str> = users.iter().map(String::as_str).collect();
        let dovecot = crate::dovecot::Dovecot::start_with(Some(&root), &names)?;
        if progress {
            eprintln!(
                "bench: Dovecot serves the corpus on imaps://127.0.0.1:{}; indexing it",
                dovecot.imaps_port
            );
        }
        for u in &users {
            dovecot.doveadm(&["mailbox", "status", "-u", u, "messages", "*"])?;
        }
        Ok(ImapServer { dovecot })
    }

    fn user(mb: &CorpusMailbox) -> String {
        mb.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The implicit-TLS address the server listens on (what a relay forwards to).
    pub(super) fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.dovecot.imaps_port).into()
    }

    /// Straight to the server, or through a relay listening on `port`.
    pub(super) fn route(&self, port: Option<u16>) -> ImapRoute<'_> {
        ImapRoute {
            server: self,
            port: port.unwrap_or(self.dovecot.imaps_port),
        }
    }
}

/// How clients reach an [`ImapServer`]: its implicit-TLS port, or a relay's in front of
/// it (same certificate, so the same CA, as the relay only forwards bytes).
#[derive(Clone, Copy)]
pub(super) struct ImapRoute<'a> {
    server: &'a ImapServer,
    /// Where clients connect, on 127.0.0.1.
    pub(super) port: u16,
}

impl ImapRoute<'_> {
    /// The IMAP user serving `mb`.
    pub(super) fn user(&self, mb: &CorpusMailbox) -> String {
        ImapServer::user(mb)
    }

    /// A file holding every user's password.
    pub(super) fn password_file(&self) -> &Path {
        &self.server.dovecot.password_file
    }

    /// The CA the server's certificate chains to.
    pub(super) fn ca_pem(&self) -> &Path {
        &self.server.dovecot.ca_pem
    }

    /// The source spec and options of one mailbox.
    pub(super) fn source(
        &self,
        mb: &CorpusMailbox,
    ) -> (String, mailferry_agent::source::SourceOptions) {
        let options = mailferry_agent::source::SourceOptions {
            password_file: Some(self.password_file().to_path_buf()),
            source_ca: Some(self.ca_pem().to_path_buf()),
            ..Default::default()
        };
        let spec = format!("imaps://{}@127.0.0.1:{}", self.user(mb), self.port);
        (spec, options)
    }
}

/// Reads every file of the corpus once, so that every run finds it in the page cache (a
/// corpus reused from `--keep` may have been evicted since it was written).
pub(super) fn warm(corpus: &Corpus) -> Result<(), AppError> {
    let mut buf = vec![0u8; 1 << 20];
    let mut dirs: Vec<PathBuf> = corpus.mailboxes.iter().map(|m| m.path.clone()).collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| AppError::io(&dir, e))? {
            let path = entry.map_err(|e| AppError::io(&dir, e))?.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let mut f = std::fs::File::open(&path).map_err(|e| AppError::io(&path, e))?;
            while std::io::Read::read(&mut f, &mut buf).map_err(|e| AppError::io(&path, e))? > 0 {}
        }
    }
    Ok(())
}
