//! `mailferry export`: a mailbox written back out of a volume as Maildir or mbox.

use super::{mailbox, VolumeAccess};
use crate::render::print_json;
use clap::ValueEnum;
use mailferry_control::{export, AppError};
use std::path::PathBuf;

/// `export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    vol: VolumeAccess,
    /// Mailbox address.
    #[arg(long)]
    mailbox: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Maildir)]
    format: Format,
    /// Output directory (must not exist or be empty).
    #[arg(long)]
    out: PathBuf,
    /// Maildir: folder layout. A folder that Maildir++ cannot hold (a name component
    /// with '.') fails the export before anything is written; `fs` holds those.
    #[arg(long, value_enum, default_value_t = ExportLayout::MaildirPlusPlus)]
    layout: ExportLayout,
    /// Maildir: encoding of folder directory names.
    #[arg(long, value_enum, default_value_t = ExportNames::Mutf7)]
    maildir_names: ExportNames,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// What an export writes.
#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Maildir (folders as .Name.Sub or, with --layout fs, Name/Sub; flags and keyword
    /// letters in file names, keywords in dovecot-keywords).
    Maildir,
    /// mboxrd, one file per folder (subfolders in a directory, or `<name>.sbd/`).
    Mbox,
}

/// Folder layout of a Maildir export.
#[derive(Clone, Copy, ValueEnum)]
enum ExportLayout {
    /// Maildir++: `.Archive.2024/` (a name component with '.' cannot be written).
    #[value(name = "maildir++")]
    MaildirPlusPlus,
    /// Dovecot's LAYOUT=fs: `Archive/2024/`; the INBOX is the root.
    Fs,
}

/// Encoding of folder directory names in a Maildir export.
#[derive(Clone, Copy, ValueEnum)]
enum ExportNames {
    /// IMAP modified UTF-7 (`.Entw&APw-rfe`), Dovecot's default.
    Mutf7,
    /// UTF-8 (`.Entwürfe`), Dovecot's `maildir:...:UTF-8`.
    Utf8,
}

/// `export`: fails (after writing every other message) if some items are damaged.
pub fn run(a: ExportArgs) -> Result<(), AppError> {
    let mb = mailbox(&a.mailbox)?;
    let v = a.vol.open()?;
    let opts = export::MaildirOptions {
        layout: match a.layout {
            ExportLayout::MaildirPlusPlus => export::Layout::MaildirPlusPlus,
            ExportLayout::Fs => export::Layout::Fs,
        },
        names: match a.maildir_names {
            ExportNames::Mutf7 => mailferry_core::profile::MaildirNames::Mutf7,
            ExportNames::Utf8 => mailferry_core::profile::MaildirNames::Utf8,
        },
    };
    let out = &a.out;
    let outcome = match a.format {
        Format::Maildir => export::export_maildir(&v, &mb, out, opts)?,
        Format::Mbox => export::export_mbox(&v, &mb, out)?,
    };
    eprintln!(
        "exported {} messages ({} bytes) of {mb} to {}",
        outcome.exported,
        outcome.bytes,
        out.display()
    );
    for d in &outcome.damaged {
        eprintln!("  damaged item {}: {}", d.item, d.reason);
    }
    for k in &outcome.keywords_not_written {
        eprintln!(
            "  folder {}: {} keyword(s) not written (a Maildir folder has 26 keyword \
             letters; the messages were exported without them): {}",
            k.folder,
            k.keywords.len(),
            k.keywords.join(" ")
        );
    }
    if a.json {
        print_json(&outcome);
    }
    if !outcome.damaged.is_empty() {
        return Err(AppError::Failed(format!(
            "{} damaged item(s) were not exported; every other message was",
            outcome.damaged.len()
        )));
    }
    Ok(())
}
