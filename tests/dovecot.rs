//! A real Dovecot IMAP server for the tests (Debian `dovecot-imapd`), started under a
//! temp directory on free loopback ports: TLS required (a certificate from a
//! [`LocalCa`] made here), one passwd-file user, Maildir storage that the tests can also
//! write directly. Nothing under /etc or /var is used or touched; the server is stopped
//! when the value is dropped.
//!
//! Dovecot refuses to give mail to uid 0, so when the tests run as root the mail user is
//! `nobody` (65534) and the temp directory is made traversable for it; as any other user
//! Dovecot runs entirely as that user.

use mailferry_core::tls::LocalCa;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime};

pub const USER: &str = "alice";
pub const PASSWORD: &str = "correct horse \"battery\" staple";

pub struct Dovecot {
    pub tmp: tempfile::TempDir,
    pub conf: PathBuf,
    pub imap_port: u16,
    pub imaps_port: u16,
    /// The CA the server certificate chains to (what `--source-ca` must name).
    pub ca_pem: PathBuf,
    /// A file holding [`PASSWORD`].
    pub password_file: PathBuf,
    uid: u32,
    gid: u32,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether the dovecot binaries are installed (`.ci/run` installs them).
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

impl Dovecot {
    /// Writes the configuration and starts the server; returns once it accepts TLS
    /// connections on its IMAPS port.
    pub fn start() -> Dovecot {
        assert!(
            available(),
            "Dovecot is not installed: apt-get install dovecot-imapd (.ci/run does)"
        );
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let probe = dir.join("probe");
        std::fs::write(&probe, b"").unwrap();
        let me = {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(&probe).unwrap();
            (m.uid(), m.gid())
        };
        let root = me.0 == 0;
        let (uid, gid) = if root { (65534, 65534) } else { me };
        if root {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        for d in ["run", "state", "mail"] {
            std::fs::create_dir(dir.join(d)).unwrap();
        }
        std::os::unix::fs::chown(dir.join("mail"), Some(uid), Some(gid)).unwrap();

        let ca = LocalCa::generate("dovecot test CA").unwrap();
        let id = ca.issue_server(&["127.0.0.1", "localhost"]).unwrap();
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, ca.cert_pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), id.chain_pem()).unwrap();
        std::fs::write(dir.join("key.pem"), id.key_pem().unwrap().as_bytes()).unwrap();
        std::fs::write(
            dir.join("passwd"),
            format!("{USER}:{{PLAIN}}{PASSWORD}::::\n"),
        )
        .unwrap();
        let password_file = dir.join("password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();

        let (imap_port, imaps_port) = (free_port(), free_port());
        let users = if root {
            String::new()
        } else {
            let name =
                String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
            let name = name.trim();
            format!(
                "default_internal_user = {name}\ndefault_internal_group = {name}\n\
                 default_login_user = {name}\nfirst_valid_uid = 1\n"
            )
        };
        let d = dir.display();
        let conf = dir.join("dovecot.conf");
        std::fs::write(
            &conf,
            format!(
                "base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
mail_location = maildir:{d}/mail/%u
auth_failure_delay = 0
{users}passdb {{
  driver = passwd-file
  args = {d}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/mail/%u
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
"
            ),
        )
        .unwrap();
        let mut d = Dovecot {
            tmp,
            conf,
            imap_port,
            imaps_port,
            ca_pem,
            password_file,
            uid,
            gid,
            child: None,
        };
        d.run();
        d
    }

    fn run(&mut self) {
        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dovecot starts");
        self.child = Some(child);
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", self.imaps_port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("Dovecot did not listen within 30 s:\n{}", self.log());
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
    pub fn restart(&mut self) {
        self.stop();
        // The master removes its pid file on the way out; wait for the ports to free.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.imaps_port)).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.run();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("dovecot.log")).unwrap_or_default()
    }

    /// The user's Maildir root.
    pub fn maildir(&self) -> PathBuf {
        self.tmp.path().join("mail").join(USER)
    }

    pub fn url(&self, implicit_tls: bool) -> String {
        if implicit_tls {
            format!("imaps://{USER}@127.0.0.1:{}", self.imaps_port)
        } else {
            format!("imap://{USER}@127.0.0.1:{}", self.imap_port)
        }
    }

    /// `doveadm -c <conf> ARGS...` for the test user.
    pub fn doveadm(&self, args: &[&str]) -> Output {
        let o = Command::new("doveadm")
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "doveadm {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// Writes a message file into the Maildir (`folder_dir` "" for INBOX, else the
    /// Maildir++ directory name such as `.Archive.2024`), with its flags in the name and
    /// `mtime` as its internal date; Dovecot picks it up at its next sync.
    pub fn put(&self, folder_dir: &str, name: &str, flags: &str, body: &[u8], mtime: i64) {
        let folder = self.maildir().join(folder_dir);
        for sub in ["", "cur", "new", "tmp"] {
            let p = folder.join(sub);
            if !p.exists() {
                std::fs::create_dir_all(&p).unwrap();
                self.own(&p);
            }
        }
        if !folder_dir.is_empty() {
            let marker = folder.join("maildirfolder");
            if !marker.exists() {
                std::fs::write(&marker, b"").unwrap();
                self.own(&marker);
            }
        }
        let path = folder.join("cur").join(format!("{name}:2,{flags}"));
        std::fs::write(&path, body).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime as u64))
            .unwrap();
        self.own(&path);
    }

    fn own(&self, p: &Path) {
        let mut cur = p.to_path_buf();
        // The Maildir root and every directory below it belong to the mail user.
        loop {
            std::os::unix::fs::chown(&cur, Some(self.uid), Some(self.gid)).unwrap();
            if cur == self.maildir() || !cur.pop() || !cur.starts_with(self.maildir()) {
                break;
            }
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}
