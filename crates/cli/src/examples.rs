//! The example that opens the `--help` of every command: admins copy a working command
//! line first and read the flags after. Kept in one table, attached to the parsed
//! command tree at start ([`attach`]), so `main.rs` only declares flags.
//!
//! The integration test `control::help_of_every_subcommand_starts_with_an_example`
//! walks the real binary's command tree, so a new subcommand without an entry here
//! fails it.

/// `(command path, example)`; the path is the words after `mailferry` (`""`: the
/// top level).
pub const EXAMPLES: &[(&str, &str)] = &[
    ("", "mailferry demo                      # a complete move with nothing to set up"),
    ("demo", "mailferry demo --data /tmp/mailferry-demo --messages 200"),
    (
        "admin",
        "mailferry admin add alice --role admin --state /var/lib/mailferry-admin",
    ),
    (
        "admin serve",
        "mailferry admin serve --listen 127.0.0.1:8444 --state /var/lib/mailferry-admin \\\n       \
         --volume /srv/vol --key-file /root/vol.key",
    ),
    (
        "admin add",
        "mailferry admin add bob --role auditor --state /var/lib/mailferry-admin\n  \
         mailferry admin add carol --role approver --tenant example.com --state /var/lib/mailferry-admin",
    ),
    (
        "access",
        "mailferry access list --state /var/lib/mailferry-admin --as alice --volume /srv/vol --key-file /root/vol.key",
    ),
    (
        "access request",
        "mailferry access request --state /var/lib/mailferry-admin --as alice \\\n       \
         --volume /srv/vol --key-file /root/vol.key --mailbox bob@example.com --reason \"ticket 4711\" --for 4h",
    ),
    (
        "access approve",
        "mailferry access approve 3f2a9c01d4e5 --state /var/lib/mailferry-admin --as carol \\\n       \
         --volume /srv/vol --key-file /root/vol.key [--tenant-key /safe/example.com.key]",
    ),
    (
        "access deny",
        "mailferry access deny 3f2a9c01d4e5 --state /var/lib/mailferry-admin --as carol \\\n       \
         --volume /srv/vol --key-file /root/vol.key",
    ),
    (
        "access list",
        "mailferry access list --state /var/lib/mailferry-admin --as dave --volume /srv/vol --key-file /root/vol.key --json",
    ),
    (
        "access export",
        "mailferry access export 3f2a9c01d4e5 --out bob.tar --state /var/lib/mailferry-admin --as alice \\\n       \
         --volume /srv/vol --key-file /root/vol.key",
    ),
    (
        "move",
        "mailferry move --source maildir:/home/alice/Maildir --mailbox alice@example.com \\\n       \
         --volume /srv/vol --key-file /root/vol.key --state /var/lib/mailferry/alice \\\n       \
         [--dry-run] [--max-bytes-per-second 10MB] [--max-messages-per-second 20]",
    ),
    ("move complete", "mailferry move complete --state /var/lib/mailferry/alice"),
    (
        "move suspend",
        "mailferry move suspend --state /var/lib/mailferry/alice --reason \"mailbox on hold\"",
    ),
    ("move resume", "mailferry move resume --state /var/lib/mailferry/alice"),
    ("move status", "mailferry move status --state /var/lib/mailferry/alice --json"),
    (
        "serve",
        "mailferry serve --volume /srv/vol --key-file /root/vol.key --listen 0.0.0.0:8443",
    ),
    (
        "proxy",
        "mailferry proxy --listen 0.0.0.0:8443 --store https://store1:8443 --store-ca store1-ca.pem \\\n       \
         --client-cert tls/client.pem --client-key tls/client.key --tls-dir /srv/front-tls",
    ),
    ("tls", "mailferry tls client --dir /srv/front-client-tls"),
    ("tls client", "mailferry tls client --dir /srv/front-client-tls"),
    (
        "token",
        "mailferry token issue --volume /srv/vol --key-file /root/vol.key --tenant example.com \\\n       \
         --out /root/example.com.token",
    ),
    (
        "token issue",
        "mailferry token issue --volume /srv/vol --key-file /root/vol.key --tenant example.com \\\n       \
         --out /root/example.com.token --valid-for 86400",
    ),
    (
        "token add",
        "mailferry token add --volume /srv/vol2 --key-file /root/vol2.key --tenant example.com \\\n       \
         --token-file /root/example.com.token",
    ),
    ("token list", "mailferry token list --volume /srv/vol --key-file /root/vol.key"),
    (
        "tenant",
        "mailferry tenant key init --tenant example.com --out example.com.key   # file only",
    ),
    (
        "tenant key",
        "mailferry tenant key init --tenant example.com --out example.com.key \\\n       \
         --volume /srv/vol --key-file /root/vol.key",
    ),
    (
        "tenant key init",
        "mailferry tenant key init --tenant example.com --out example.com.key \\\n       \
         --volume /srv/vol --key-file /root/vol.key --json",
    ),
    (
        "tenant key convert",
        "mailferry tenant key convert --tenant example.com --volume /srv/vol --key-file /root/vol.key",
    ),
    ("token revoke", "mailferry token revoke --volume /srv/vol --key-file /root/vol.key 3"),
    (
        "export",
        "mailferry export --volume /srv/vol --key-file /root/vol.key --mailbox alice@example.com \\\n       \
         --format maildir --out /tmp/alice-export",
    ),
    ("volume", "mailferry volume init --volume /srv/vol --key-file /root/vol.key"),
    ("volume init", "mailferry volume init --volume /srv/vol --key-file /root/vol.key"),
    ("volume verify", "mailferry volume verify --volume /srv/vol --key-file /root/vol.key"),
    (
        "volume unlock-check",
        "mailferry volume unlock-check --volume /srv/vol --recovery-key-file /safe/vol.key.recovery",
    ),
    (
        "volume rekey",
        "mailferry volume rekey --volume /srv/vol --key-file /root/vol.key --new-key-file /root/vol-2.key",
    ),
    (
        "volume shred",
        "mailferry volume shred --volume /srv/vol --key-file /root/vol.key --mailbox bob@example.com",
    ),
    (
        "volume rotate",
        "mailferry volume rotate --volume /srv/vol --key-file /root/vol.key --mailbox alice@example.com",
    ),
    ("volume compact", "mailferry volume compact --volume /srv/vol --key-file /root/vol.key"),
    ("volume replicate", "mailferry volume replicate --volume /srv/vol --to /backup/vol"),
    ("volume upgrade", "mailferry volume upgrade --volume /srv/vol --key-file /root/vol.key"),
    ("audit", "mailferry audit verify /var/lib/mailferry/alice"),
    (
        "audit verify",
        "mailferry audit verify /srv/vol --public-key /root/vol-audit.pub",
    ),
    (
        "audit public-key",
        "mailferry audit public-key /srv/vol --key-file /root/vol.key --out /root/vol-audit.pub",
    ),
    (
        "audit reconcile",
        "mailferry audit reconcile --state /var/lib/mailferry/alice --volume /srv/vol --key-file /root/vol.key",
    ),
    (
        "receipt",
        "mailferry receipt verify --state /var/lib/mailferry/alice --volume /srv/vol --key-file /root/vol.key",
    ),
    (
        "receipt verify",
        "mailferry receipt verify --state /var/lib/mailferry/alice --volume /srv/vol --key-file /root/vol.key",
    ),
    (
        "report",
        "mailferry report --state /var/lib/mailferry/alice --format html --out alice-move.html",
    ),
    ("profile", "mailferry profile check migration-profiles/gmail-imap.toml"),
    ("profile check", "mailferry profile check migration-profiles/gmail-imap.toml"),
    ("profile default", "mailferry profile default > my-profile.toml"),
    ("profile show", "mailferry profile show migration-profiles/gmail-imap.toml --json"),
    ("bench", "mailferry bench --small --json > bench.json"),
    (
        "batch",
        "mailferry batch new spring --csv users.csv --endpoint imap.toml --volume /srv/vol \\\n       \
         --key-file /root/vol.key",
    ),
    (
        "batch new",
        "mailferry batch new spring --csv users.csv --endpoint imap.toml --volume /srv/vol \\\n       \
         --key-file /root/vol.key --concurrency 4 --suspend-when-ready --start",
    ),
    ("batch start", "mailferry batch start spring"),
    ("batch status", "mailferry batch status spring --json"),
    ("batch add-users", "mailferry batch add-users spring --csv more-users.csv"),
    ("batch complete", "mailferry batch complete spring --approve-skipped"),
    ("batch suspend", "mailferry batch suspend spring"),
    ("batch resume", "mailferry batch resume spring"),
    (
        "worker",
        "mailferry worker --db-file /etc/mailferry/db.url --concurrency 8 \\\n       \
         --state /var/lib/mailferry-worker   # on each machine; `batch start NAME --db ...` queues\n  \
         # db.url (chmod 600): postgres://mailferry:PASSWORD@db.example.com/mailferry?sslmode=verify-full",
    ),
    (
        "endpoint",
        "mailferry endpoint test imap.toml --user alice@example.com",
    ),
    (
        "endpoint test",
        "mailferry endpoint test imap.toml --user alice@example.com --password-file alice.pw",
    ),
];

/// The example of the command at `path`, if there is one.
pub fn example(path: &str) -> Option<&'static str> {
    EXAMPLES.iter().find(|(p, _)| *p == path).map(|(_, e)| *e)
}

/// Puts each command's example at the top of its help (`before_help`), recursively.
pub fn attach(cmd: clap::Command) -> clap::Command {
    attach_at(cmd, "")
}

fn attach_at(mut cmd: clap::Command, path: &str) -> clap::Command {
    if let Some(e) = example(path) {
        cmd = cmd.before_help(format!("Example:\n  {e}"));
    }
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    for name in names {
        let sub = if path.is_empty() {
            name.clone()
        } else {
            format!("{path} {name}")
        };
        cmd = cmd.mut_subcommand(&name, |c| attach_at(c, &sub));
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_are_unique_and_start_with_the_command() {
        let mut seen = std::collections::BTreeSet::new();
        for (path, e) in EXAMPLES {
            assert!(seen.insert(*path), "two examples for {path:?}");
            let want = if path.is_empty() {
                "mailferry ".to_string()
            } else {
                format!("mailferry {} ", path.split(' ').next().unwrap())
            };
            assert!(e.starts_with(&want), "{path:?}: {e}");
        }
    }

    #[test]
    fn attach_reaches_nested_commands() {
        let cmd = clap::Command::new("mailferry")
            .subcommand(clap::Command::new("move").subcommand(clap::Command::new("status")));
        let mut cmd = attach(cmd);
        let help = cmd
            .find_subcommand_mut("move")
            .unwrap()
            .find_subcommand_mut("status")
            .unwrap()
            .render_help()
            .to_string();
        assert!(
            help.starts_with("Example:\n  mailferry move status"),
            "{help}"
        );
    }
}
