//! Issue 6, split deployment: one front proxy and two store nodes as three processes,
//! mutual TLS between them, each mailbox on the node that owns it; a store node killed
//! mid-move fails only its own mailboxes' streams, which resume once it is back.

use crate::util::*;
use mailferry_bench::sample::{write_maildir, SampleSpec, SizeModel};
use std::path::{Path, PathBuf};

struct Node {
    volume: PathBuf,
    key: PathBuf,
}

fn store_node(node: &Node, client_ca: &Path, listen: &str) -> Daemon {
    let mut c = mailferry();
    c.arg("serve")
        .arg("--volume")
        .arg(&node.volume)
        .arg("--key-file")
        .arg(&node.key)
        .args(["--listen", listen, "--client-ca"])
        .arg(client_ca);
    Daemon::start(c, "store")
}

fn move_via(
    env: &Env,
    src: &Path,
    proxy: &Daemon,
    mailbox: &str,
    token: &Path,
) -> std::process::Output {
    run(mailferry()
        .arg("move")
        .arg("--source")
        .arg(format!("maildir:{}", src.display()))
        .args(["--mailbox", mailbox, "--proxy", &proxy.url(), "--ca"])
        .arg(&proxy.ca)
        .arg("--token-file")
        .arg(token)
        .arg("--state")
        .arg(env.path(&format!("state-{mailbox}"))))
}

/// Moves `mailboxes` concurrently (4 agents at a time); every agent must succeed.
fn move_all(env: &Env, src: &Path, proxy: &Daemon, mailboxes: &[String], token: &Path) {
    std::thread::scope(|s| {
        for chunk in mailboxes.chunks(mailboxes.len().div_ceil(4)) {
            s.spawn(move || {
                for m in chunk {
                    let o = move_via(env, src, proxy, m, token);
                    assert!(o.status.success(), "{m}: {}", describe(&o));
                }
            });
        }
    });
}

#[test]
fn issue6_proxy_routes_mailboxes_to_their_store_nodes_and_survives_a_node_restart() {
    let env = Env::new();
    let src = env.path("src");
    write_maildir(
        &src,
        &SampleSpec {
            seed: 66,
            messages: 25,
            folders: 2,
            size: SizeModel::Small,
            markers: None,
        },
    )
    .unwrap();
    let source = read_maildir(&src);
    let nodes = [
        Node {
            volume: env.path("a"),
            key: env.path("a.key"),
        },
        Node {
            volume: env.path("b"),
            key: env.path("b.key"),
        },
    ];
    for n in &nodes {
        let o = run(mailferry()
            .args(["volume", "init", "--volume"])
            .arg(&n.volume)
            .arg("--key-file")
            .arg(&n.key));
        assert!(o.status.success(), "{}", describe(&o));
    }
    // One agent token, valid on both nodes.
    let token = env.path("agent.token");
    let o = run(mailferry()
        .args(["token", "issue", "--tenant", "example.com", "--volume"])
        .arg(&nodes[0].volume)
        .arg("--key-file")
        .arg(&nodes[0].key)
        .arg("--out")
        .arg(&token));
    assert!(o.status.success(), "{}", describe(&o));
    let o = run(mailferry()
        .args(["token", "add", "--tenant", "example.com", "--volume"])
        .arg(&nodes[1].volume)
        .arg("--key-file")
        .arg(&nodes[1].key)
        .arg("--token-file")
        .arg(&token));
    assert!(o.status.success(), "{}", describe(&o));
    let client = env.path("client-tls");
    let o = run(mailferry().args(["tls", "client", "--dir"]).arg(&client));
    assert!(o.status.success(), "{}", describe(&o));
    let client_ca = client.join("client-ca.pem");

    let a = store_node(&nodes[0], &client_ca, "127.0.0.1:0");
    let b = store_node(&nodes[1], &client_ca, "127.0.0.1:0");
    let b_port = b.port;
    let start_proxy = |a: &Daemon, b_url: &str, b_ca: &Path| {
        let mut c = mailferry();
        c.args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--store",
            &a.url(),
            "--store",
            b_url,
            "--store-ca",
        ])
        .arg(&a.ca)
        .arg("--store-ca")
        .arg(b_ca)
        .arg("--client-cert")
        .arg(client.join("client.pem"))
        .arg("--client-key")
        .arg(client.join("client.key"))
        .arg("--tls-dir")
        .arg(env.path("proxy-tls"));
        Daemon::start(c, "proxy")
    };
    let (b_url, b_ca) = (b.url(), b.ca.clone());
    let proxy = start_proxy(&a, &b_url, &b_ca);

    // A store node refuses a client without the proxy's client certificate.
    let o = run(mailferry()
        .arg("move")
        .arg("--source")
        .arg(format!("maildir:{}", src.display()))
        .args([
            "--mailbox",
            "direct@example.com",
            "--proxy",
            &a.url(),
            "--ca",
        ])
        .arg(&a.ca)
        .arg("--token-file")
        .arg(&token)
        .arg("--state")
        .arg(env.path("state-direct")));
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));

    let round1: Vec<String> = (0..20).map(|i| format!("user{i}@example.com")).collect();
    move_all(&env, &src, &proxy, &round1, &token);

    // Kill node B (SIGKILL) while the second round runs, bring it back on its port.
    // Streams B held fail (their agents exit 1 and name the lost connection); agents that
    // reach the proxy while B is down are refused with 503 and retry; A's mailboxes are
    // not affected. A rerun of the failed moves resumes them.
    let a_url = a.url();
    let urls = [a_url.as_str(), b_url.as_str()];
    let owner = |m: &str| mailferry_proxy::forward::owner_index(&urls, m);
    let round2: Vec<String> = (0..20).map(|i| format!("late{i}@example.com")).collect();
    let mut b = Some(b);
    let (failed, b_again) = std::thread::scope(|s| {
        let movers: Vec<_> = round2
            .chunks(5)
            .map(|chunk| {
                let (env, src, proxy, token) = (&env, &src, &proxy, &token);
                s.spawn(move || {
                    chunk
                        .iter()
                        .filter(|m| !move_via(env, src, proxy, m, token).status.success())
                        .cloned()
                        .collect::<Vec<String>>()
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(150));
        drop(b.take());
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let again = store_node(&nodes[1], &client_ca, &format!("127.0.0.1:{b_port}"));
        let failed: Vec<String> = movers.into_iter().flat_map(|h| h.join().unwrap()).collect();
        (failed, again)
    });
    for m in &failed {
        assert_eq!(
            owner(m),
            1,
            "{m} failed but is owned by the node that stayed up"
        );
        let o = move_via(&env, &src, &proxy, m, &token);
        assert!(o.status.success(), "resume of {m}: {}", describe(&o));
    }
    eprintln!("{} of node B's moves were cut and resumed", failed.len());
    assert_eq!(proxy.stop(), Some(0));
    assert_eq!(a.stop(), Some(0));
    assert_eq!(b_again.stop(), Some(0));

    // Every mailbox is on exactly the node the documented rule names, byte-identical.
    let mut per_node = [0, 0];
    for m in round1.iter().chain(&round2) {
        let mut found = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            let out = env.path(&format!("export-{i}-{m}"));
            let o = run(mailferry()
                .arg("export")
                .arg("--volume")
                .arg(&n.volume)
                .arg("--key-file")
                .arg(&n.key)
                .args(["--mailbox", m, "--format", "maildir", "--out"])
                .arg(&out));
            if o.status.success() {
                assert_eq!(read_maildir(&out), source, "{m} on node {i}");
                found.push(i);
            }
        }
        assert_eq!(found, vec![owner(m)], "{m} is on nodes {found:?}");
        per_node[found[0]] += 1;
    }
    assert!(per_node[0] > 0 && per_node[1] > 0, "{per_node:?}");
}
