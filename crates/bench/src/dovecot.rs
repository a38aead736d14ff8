//! A scratch Dovecot IMAP server (Debian `dovecot-imapd`), started under a temp directory
//! on free loopback ports: TLS required (a certificate from a [`LocalCa`] made here),
//! passwd-file users, Maildir storage that the caller can also write directly. It serves
//! `mailferry bench --source imap`, the IMAP delta benchmark and the integration tests.
//!
//! It is not a way to run Dovecot for users: nothing under /etc or /var is used or
//! touched, every user has the same generated password, and the server is stopped when
//! the value is dropped.
//!
//! Dovecot refuses to give mail to uid 0, so when we run as root the mail user is
//! `nobody` (65534) and the temp directory is made traversable for it; as any other user
//! Dovecot runs entirely as that user.

use crate::AppError;
use mailferry_core::tls::LocalCa;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime};

/// The user of [`Dovecot::start`].
pub const USER: &str = "alice";
/// Every user's password (quotes and spaces on purpose: the client must quote it).
pub const PASSWORD: &str = "correct horse \"battery\" staple";

/// How a scratch Dovecot differs from the default one, for tests that need a server
/// configured as real deployments are (UTF-8 Maildir names, a Courier-style namespace,
/// the virtual plugin, a certificate made elsewhere).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Appended to `mail_location = maildir:ROOT/%u` (e.g. `:UTF-8`, `:LAYOUT=fs`).
    pub mail_location_suffix: String,
    /// Appended verbatim to the configuration (namespaces, plugins, `mail_plugins`).
    pub extra_conf: String,
    /// The server's certificate chain and key (PEM files) instead of one issued by the
    /// scratch CA; `ca_pem` then names the certificate file itself.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// A running scratch Dovecot.
pub struct Dovecot {
    /// Holds the configuration, certificates, logs and (by default) the mail.
    pub tmp: tempfile::TempDir,
    /// The configuration file (`doveadm -c`).
    pub conf: PathBuf,
    /// Plain IMAP port (STARTTLS required: `ssl = required`).
    pub imap_port: u16,
    /// Implicit-TLS IMAP port.
    pub imaps_port: u16,
    /// The CA the server certificate chains to (what `--source-ca` must name).
    pub ca_pem: PathBuf,
    /// A file holding [`PASSWORD`] (what `--password-file` must name).
    pub password_file: PathBuf,
    /// Each user's Maildir is `mail_root/<user>`.
    pub mail_root: PathBuf,
    uid: u32,
    gid: u32,
    child: Option<Child>,
}

/// Whether the Dovecot binaries are installed (`./test.sh` installs them).
pub fn available() -> bool {
    Path::new("/usr/lib/dovecot/imap").exists() && which("dovecot") && which("doveadm")
}

fn which(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Two loopback ports free a moment ago, and different from each other (both are held
/// until both are chosen).
fn free_ports() -> Result<(u16, u16), AppError> {
    let bind = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| AppError::Failed(format!("no free loopback port for Dovecot: {e}")))
    };
    let port = |l: &std::net::TcpListener| {
        l.local_addr()
            .map(|a| a.port())
            .map_err(|e| AppError::io(Path::new("127.0.0.1"), e))
    };
    let (a, b) = (bind()?, bind()?);
    Ok((port(&a)?, port(&b)?))
}

fn failed(what: &str, e: impl std::fmt::Display) -> AppError {
    AppError::Failed(format!("scratch Dovecot: {what}: {e}"))
}

impl Dovecot {
    /// Starts a server with the one user [`USER`], mail under the temp directory.
    pub fn start() -> Result<Dovecot, AppError> {
        Dovecot::start_with(None, &[USER])
    }

    /// Starts a server whose `users` keep their Maildirs under `mail_root` (default: in
    /// the temp directory); returns once it accepts TLS connections. Everything under an
    /// existing `mail_root` is handed to the mail user (see the module doc).
    pub fn start_with(mail_root: Option<&Path>, users: &[&str]) -> Result<Dovecot, AppError> {
        Dovecot::start_configured(mail_root, users, &Options::default())
    }

    /// [`Dovecot::start_with`], configured by `opts`.
    pub fn start_configured(
        mail_root: Option<&Path>,
        users: &[&str],
        opts: &Options,
    ) -> Result<Dovecot, AppError> {
        check_can_start(users)?;
        let tmp = tempfile::tempdir().map_err(|e| failed("temp directory", e))?;
        let dir = tmp.path();
        let mail_user = MailUser::for_dir(dir)?;
        for d in ["run", "state", "mail"] {
            std::fs::create_dir(dir.join(d)).map_err(|e| AppError::io(&dir.join(d), e))?;
        }
        let mail_root = match mail_root {
            Some(p) => std::path::absolute(p).map_err(|e| AppError::io(p, e))?,
            None => dir.join("mail"),
        };
        mail_user.prepare_mail_root(&mail_root)?;
        let ca_pem = write_tls_files(dir, opts)?;
        let password_file = write_passwords(dir, users)?;
        let (imap_port, imaps_port) = free_ports()?;
        let conf = dir.join("dovecot.conf");
        let text = config_text(dir, &mail_root, &mail_user, (imap_port, imaps_port), opts)?;
        write_file(&conf, text.as_bytes())?;
        let mut dv = Dovecot {
            tmp,
            conf,
            imap_port,
            imaps_port,
            ca_pem,
            password_file,
            mail_root,
            uid: mail_user.uid,
            gid: mail_user.gid,
            child: None,
        };
        dv.run()?;
        Ok(dv)
    }

    fn run(&mut self) -> Result<(), AppError> {
        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| failed("dovecot -F", e))?;
        self.child = Some(child);
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", self.imaps_port)).is_ok() {
                return Ok(());
            }
            // A master that could not bind (a port taken meanwhile) exits: say so now,
            // not after 30 s, and never take another listener on the port for it.
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(AppError::Failed(format!(
                    "scratch Dovecot exited at start ({status}); its log:\n{}",
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(AppError::Failed(format!(
            "scratch Dovecot did not listen within 30 s; its log:\n{}",
            self.log()
        )))
    }

    /// Stops the server (SIGTERM, then waits for its processes to go).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            for _ in 0..100 {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops and starts the server with the same configuration and ports.
    pub fn restart(&mut self) -> Result<(), AppError> {
        self.stop();
        // The master removes its pid file on the way out; wait for the ports to free.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.imaps_port)).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.run()
    }

    /// Dovecot's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("dovecot.log")).unwrap_or_default()
    }

    /// [`USER`]'s Maildir root.
    pub fn maildir(&self) -> PathBuf {
        self.user_maildir(USER)
    }

    /// `user`'s Maildir root.
    pub fn user_maildir(&self, user: &str) -> PathBuf {
        self.mail_root.join(user)
    }

    /// The source spec of [`USER`].
    pub fn url(&self, implicit_tls: bool) -> String {
        self.user_url(USER, implicit_tls)
    }

    /// The source spec of `user`: `imaps://user@127.0.0.1:PORT`, or `imap://` (STARTTLS).
    pub fn user_url(&self, user: &str, implicit_tls: bool) -> String {
        if implicit_tls {
            format!("imaps://{user}@127.0.0.1:{}", self.imaps_port)
        } else {
            format!("imap://{user}@127.0.0.1:{}", self.imap_port)
        }
    }

    /// `doveadm -c <conf> ARGS...`; fails with its output unless it succeeds.
    pub fn doveadm(&self, args: &[&str]) -> Result<Output, AppError> {
        let o = Command::new("doveadm")
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .output()
            .map_err(|e| failed("doveadm", e))?;
        if !o.status.success() {
            return Err(AppError::Failed(format!(
                "doveadm {args:?} failed:\n{}\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )));
        }
        Ok(o)
    }

    /// Writes a message file into [`USER`]'s Maildir (`folder_dir` "" for INBOX, else
    /// the Maildir++ directory name such as `.Archive.2024`), with its flags in the name
    /// and `mtime` as its internal date; Dovecot picks it up at its next sync.
    pub fn put(
        &self,
        folder_dir: &str,
        name: &str,
        flags: &str,
        body: &[u8],
        mtime: i64,
    ) -> Result<(), AppError> {
        let io = |p: &Path, e| AppError::io(p, e);
        let folder = self.maildir().join(folder_dir);
        for sub in ["", "cur", "new", "tmp"] {
            let p = folder.join(sub);
            if !p.exists() {
                std::fs::create_dir_all(&p).map_err(|e| io(&p, e))?;
                self.own(&p)?;
            }
        }
        if !folder_dir.is_empty() {
            let marker = folder.join("maildirfolder");
            if !marker.exists() {
                std::fs::write(&marker, b"").map_err(|e| io(&marker, e))?;
                self.own(&marker)?;
            }
        }
        let path = folder.join("cur").join(format!("{name}:2,{flags}"));
        std::fs::write(&path, body).map_err(|e| io(&path, e))?;
        let f = std::fs::File::options()
            .write(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime.max(0) as u64))
            .map_err(|e| io(&path, e))?;
        self.own(&path)
    }

    /// Hands `path` and everything below it to the mail user (files written into a
    /// Maildir behind Dovecot's back must be readable and renamable by it).
    pub fn own_tree(&self, path: &Path) -> Result<(), AppError> {
        chown_tree(path, self.uid, self.gid)
    }

    fn own(&self, p: &Path) -> Result<(), AppError> {
        let mut cur = p.to_path_buf();
        // The Maildir root and every directory below it belong to the mail user.
        loop {
            std::os::unix::fs::chown(&cur, Some(self.uid), Some(self.gid))
                .map_err(|e| AppError::io(&cur, e))?;
            if cur == self.maildir() || !cur.pop() || !cur.starts_with(self.maildir()) {
                break;
            }
        }
        Ok(())
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

fn traversable(dir: &Path) -> Result<bool, AppError> {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(dir).map_err(|e| AppError::io(dir, e))?;
    Ok(m.permissions().mode() & 0o001 != 0)
}

fn make_traversable(dir: &Path) -> Result<(), AppError> {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(dir).map_err(|e| AppError::io(dir, e))?;
    let mode = m.permissions().mode();
    if mode & 0o001 == 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o755))
            .map_err(|e| AppError::io(dir, e))?;
    }
    Ok(())
}

fn chown_tree(root: &Path, uid: u32, gid: u32) -> Result<(), AppError> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).map_err(|e| AppError::io(&p, e))?;
        let meta = std::fs::symlink_metadata(&p).map_err(|e| AppError::io(&p, e))?;
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).map_err(|e| AppError::io(&p, e))? {
                stack.push(e.map_err(|e| AppError::io(&p, e))?.path());
            }
        }
    }
    Ok(())
}

// === starting a server, step by step ===

/// Refuses early, before anything is written: Dovecot missing, or a user name that the
/// passwd file or the `%u` expansion would misread.
fn check_can_start(users: &[&str]) -> Result<(), AppError> {
    if !available() {
        return Err(AppError::Usage(
            "Dovecot is not installed: apt-get install dovecot-core dovecot-imapd \
             (./test.sh does)"
                .into(),
        ));
    }
    if let Some(bad) = users
        .iter()
        .find(|u| u.is_empty() || u.contains([':', '/', '\n', '%']))
    {
        return Err(AppError::Usage(format!(
            "scratch Dovecot: user name {bad:?} cannot be a passwd-file user"
        )));
    }
    Ok(())
}

/// Who Dovecot gives the mail to: ourselves, or `nobody` when we are root (see the
/// module doc).
struct MailUser {
    uid: u32,
    gid: u32,
    /// We run as root, so the mail user is `nobody` and paths must be opened up for it.
    root: bool,
}

impl MailUser {
    /// Finds out who we are from a file written in `dir` (the temp directory), and makes
    /// `dir` traversable for `nobody` when we are root.
    fn for_dir(dir: &Path) -> Result<MailUser, AppError> {
        use std::os::unix::fs::MetadataExt;
        let probe = dir.join("probe");
        write_file(&probe, b"")?;
        let m = std::fs::metadata(&probe).map_err(|e| AppError::io(&probe, e))?;
        let root = m.uid() == 0;
        let (uid, gid) = if root {
            (65534, 65534)
        } else {
            (m.uid(), m.gid())
        };
        if root {
            make_traversable(dir)?;
        }
        Ok(MailUser { uid, gid, root })
    }

    /// Creates `mail_root` and, as root, hands it to the mail user.
    fn prepare_mail_root(&self, mail_root: &Path) -> Result<(), AppError> {
        std::fs::create_dir_all(mail_root).map_err(|e| AppError::io(mail_root, e))?;
        if !self.root {
            return Ok(());
        }
        // The mail user must reach the Maildirs and write Dovecot's index files. Only
        // directories under the temp dir (ours) are opened up; anything else is the
        // admin's to decide.
        let tmp_root = std::env::temp_dir();
        let mut up = mail_root.to_path_buf();
        while up.pop() && up != Path::new("/") {
            if traversable(&up)? {
                continue;
            }
            if !up.starts_with(&tmp_root) || up == tmp_root {
                return Err(AppError::Usage(format!(
                    "scratch Dovecot: its mail user (nobody) cannot reach {}: directory \
                     {} is not searchable by others; use a directory under {} or \
                     `chmod o+x` it",
                    mail_root.display(),
                    up.display(),
                    tmp_root.display()
                )));
            }
            make_traversable(&up)?;
        }
        chown_tree(mail_root, self.uid, self.gid)
    }

    /// The configuration lines that let Dovecot run entirely as a non-root user (empty
    /// as root, where Dovecot's own defaults apply).
    fn conf_lines(&self) -> Result<String, AppError> {
        if self.root {
            return Ok(String::new());
        }
        let out = Command::new("id")
            .arg("-un")
            .output()
            .map_err(|e| failed("id -un", e))?;
        let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(format!(
            "default_internal_user = {name}\ndefault_internal_group = {name}\n\
             default_login_user = {name}\nfirst_valid_uid = 1\n"
        ))
    }
}

fn write_file(p: &Path, b: &[u8]) -> Result<(), AppError> {
    std::fs::write(p, b).map_err(|e| AppError::io(p, e))
}

/// Writes `ca.pem`, `cert.pem` and `key.pem` into `dir`: issued by a fresh scratch CA, or
/// copied from `opts.tls`. Returns the path of `ca.pem`.
fn write_tls_files(dir: &Path, opts: &Options) -> Result<PathBuf, AppError> {
    let ca_pem = dir.join("ca.pem");
    match &opts.tls {
        None => {
            let ca = LocalCa::generate("scratch Dovecot CA")?;
            let id = ca.issue_server(&["127.0.0.1", "localhost"])?;
            write_file(&ca_pem, ca.cert_pem().as_bytes())?;
            write_file(&dir.join("cert.pem"), id.chain_pem().as_bytes())?;
            write_file(&dir.join("key.pem"), id.key_pem()?.as_bytes())?;
        }
        Some((cert, key)) => {
            let read = |p: &Path| std::fs::read(p).map_err(|e| AppError::io(p, e));
            let cert = read(cert)?;
            write_file(&ca_pem, &cert)?;
            write_file(&dir.join("cert.pem"), &cert)?;
            write_file(&dir.join("key.pem"), &read(key)?)?;
        }
    }
    Ok(ca_pem)
}

/// Writes the passwd file of `users` into `dir`, and a file holding [`PASSWORD`] for the
/// client; returns the latter's path.
fn write_passwords(dir: &Path, users: &[&str]) -> Result<PathBuf, AppError> {
    let passwd: String = users
        .iter()
        .map(|u| format!("{u}:{{PLAIN}}{PASSWORD}::::\n"))
        .collect();
    write_file(&dir.join("passwd"), passwd.as_bytes())?;
    let password_file = dir.join("password");
    write_file(&password_file, format!("{PASSWORD}\n").as_bytes())?;
    Ok(password_file)
}

/// The `dovecot.conf` of a server whose files live in `dir` and whose mail lives under
/// `mail_root`, listening on loopback `ports` (plain, implicit TLS).
fn config_text(
    dir: &Path,
    mail_root: &Path,
    mail_user: &MailUser,
    (imap_port, imaps_port): (u16, u16),
    opts: &Options,
) -> Result<String, AppError> {
    let users_conf = mail_user.conf_lines()?;
    let (uid, gid) = (mail_user.uid, mail_user.gid);
    let d = dir.display();
    let m = mail_root.display();
    Ok(format!(
        "base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
mail_location = maildir:{m}/%u{suffix}
auth_failure_delay = 0
{users_conf}passdb {{
  driver = passwd-file
  args = {d}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={m}/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = {imaps_port}
    ssl = yes
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
{extra}
",
        suffix = opts.mail_location_suffix,
        extra = opts.extra_conf,
    ))
}
