//! Issue 4: incremental passes mirror the source (new messages moved, deleted ones
//! removed, flag changes carried over, nothing unchanged re-sent), a killed delta pass
//! resumes to an exact mirror, and two agents never run the same move at once.

use crate::util::*;
use mailferry_bench::sample::{write_maildir, SampleSpec, SizeModel};
use std::fs;
use std::path::{Path, PathBuf};

const MB: &str = "mirror@example.com";

fn sample(root: &Path, messages: usize, seed: u64) -> usize {
    write_maildir(
        root,
        &SampleSpec {
            seed,
            messages,
            folders: 4,
            size: SizeModel::Small,
            markers: None,
        },
    )
    .unwrap()
    .messages
}

/// Every message file of the Maildir tree, sorted.
fn message_files(root: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![root.to_path_buf()];
    for e in fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with('.') && e.path().is_dir() {
            dirs.push(e.path());
        }
    }
    let mut out = Vec::new();
    for d in dirs {
        for sub in ["cur", "new"] {
            if let Ok(rd) = fs::read_dir(d.join(sub)) {
                out.extend(rd.map(|e| e.unwrap().path()));
            }
        }
    }
    out.sort();
    out
}

/// Changes `n` messages' flags in place: `cur/x:2,S` → `cur/x:2,FS`, `new/x` → `cur/x:2,F`.
fn reflag(files: &[PathBuf]) {
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let folder_dir = f.parent().unwrap().parent().unwrap();
        let (unique, flags) = name.split_once(":2,").unwrap_or((&name, ""));
        let mut new_flags: Vec<char> = flags.chars().filter(|c| *c != 'F').collect();
        if flags.contains('F') {
            new_flags.push('T');
        } else {
            new_flags.push('F');
        }
        new_flags.sort();
        let to = folder_dir.join("cur").join(format!(
            "{unique}:2,{}",
            new_flags.iter().collect::<String>()
        ));
        fs::rename(f, to).unwrap();
    }
}

/// Adds `n` messages to the INBOX by copying `template` under new unique names.
fn add_new(root: &Path, template: &Path, n: usize, tag: &str) {
    let body = fs::read(template).unwrap();
    for i in 0..n {
        let mut b = format!("X-Added: {tag}-{i}\r\n").into_bytes();
        b.extend_from_slice(&body);
        fs::write(
            root.join("new")
                .join(format!("1900000000.added{tag}{i}.host")),
            b,
        )
        .unwrap();
    }
}

fn verify_and_compare(env: &Env, src: &Path) {
    let o = run(mailferry()
        .args(["volume", "verify", "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key()));
    assert!(o.status.success(), "{}", describe(&o));
    let out = env.path("export");
    let _ = fs::remove_dir_all(&out);
    let o = export(env, MB, &out);
    assert!(o.status.success(), "{}", describe(&o));
    // read_maildir panics on a message exported twice; equality means nothing is
    // missing, nothing extra, and every flag is the source's.
    assert_eq!(
        read_maildir(&out),
        read_maildir(src),
        "export is not a mirror of the source"
    );
}

#[test]
fn issue4_delta_pass_moves_new_removes_deleted_and_updates_flags() {
    let env = Env::new();
    let src = env.path("src");
    let n = sample(&src, 200, 11) as u64;
    init_volume(&env);
    let (code, r, o) = move_maildir(&env, &src, MB);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(r.unwrap()["items_moved"], n);

    let files = message_files(&src);
    assert!(files.len() as u64 == n && n > 50);
    // 2 deleted, 3 re-flagged, 1 moved to another folder, 4 new.
    fs::remove_file(&files[3]).unwrap();
    fs::remove_file(&files[40]).unwrap();
    reflag(&files[10..13]);
    let moved_from = &files[20];
    let other_folder = files
        .iter()
        .map(|f| f.parent().unwrap().parent().unwrap().to_path_buf())
        .find(|d| d != moved_from.parent().unwrap().parent().unwrap())
        .unwrap();
    fs::rename(
        moved_from,
        other_folder
            .join("cur")
            .join(moved_from.file_name().unwrap()),
    )
    .unwrap();
    add_new(&src, &files[0], 4, "a");

    let (code, r, o) = move_maildir(&env, &src, MB);
    assert_eq!(code, 0, "{}", describe(&o));
    let r = r.unwrap();
    assert_eq!(r["items_moved"], 5, "4 new + 1 moved between folders: {r}");
    assert_eq!(r["items_deleted"], 3, "2 deleted + 1 moved away: {r}");
    assert_eq!(r["items_flags_updated"], 3, "{r}");
    assert_eq!(r["items_skipped_duplicate"], n - 2 - 3 - 1, "{r}");
    assert_eq!(r["receipt"]["matches"], true, "{r}");
    verify_and_compare(&env, &src);

    // Nothing changed: a pass that sends nothing and changes nothing.
    let (code, r, o) = move_maildir(&env, &src, MB);
    assert_eq!(code, 0, "{}", describe(&o));
    let r = r.unwrap();
    assert_eq!(
        (
            &r["items_moved"],
            &r["items_deleted"],
            &r["items_flags_updated"]
        ),
        (&0.into(), &0.into(), &0.into()),
        "{r}"
    );
    assert_eq!(r["receipt"]["matches"], true, "{r}");

    // Both audit logs still verify and pair up message by message, deletions included.
    let o = run(mailferry()
        .args(["audit", "reconcile", "--state"])
        .arg(env.path(&format!("state-{MB}")))
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key()));
    assert!(o.status.success(), "{}", describe(&o));
}

#[test]
fn issue4_killed_delta_passes_resume_to_an_exact_mirror() {
    let env = Env::new();
    let src = env.path("src");
    sample(&src, 600, 12);
    init_volume(&env);
    let (code, _, o) = move_maildir(&env, &src, MB);
    assert_eq!(code, 0, "{}", describe(&o));

    let files = message_files(&src);
    for f in files.iter().step_by(5) {
        fs::remove_file(f).unwrap();
    }
    let survivors: Vec<PathBuf> = files.iter().filter(|f| f.exists()).cloned().collect();
    reflag(
        &survivors
            .iter()
            .skip(2)
            .step_by(7)
            .cloned()
            .collect::<Vec<_>>(),
    );
    add_new(&src, &files[1], 400, "k");

    // The log already holds the first pass's records; kill after a few more.
    let log = env.path(&format!("state-{MB}/audit.jsonl"));
    let base = fs::read_to_string(&log)
        .unwrap()
        .matches("\"event\":\"message.")
        .count();
    for (i, extra) in [0usize, 60, 250].into_iter().enumerate() {
        move_and_kill(&env, &src, MB, base + extra);
        // The state dir must never be left locked or torn beyond repair.
        assert!(log.exists(), "kill {i}");
    }
    let (code, r, o) = move_maildir(&env, &src, MB);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(r.unwrap()["receipt"]["matches"], true);
    verify_and_compare(&env, &src);
}

#[test]
fn issue4_second_agent_on_the_same_state_refuses_and_changes_nothing() {
    let env = Env::new();
    let src = env.path("src");
    sample(&src, 3000, 13);
    init_volume(&env);
    let state = env.path(&format!("state-{MB}"));
    let mut first = mailferry()
        .arg("move")
        .arg("--source")
        .arg(format!("maildir:{}", src.display()))
        .args(["--mailbox", MB, "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--state")
        .arg(&state)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first agent holds the checkpoint (its log has a pass record).
    let log = state.join("audit.jsonl");
    // Bounded at 2 minutes for a loaded machine; an agent that ended is not waited for.
    for _ in 0..60_000 {
        if fs::read_to_string(&log)
            .map(|t| t.contains("pass.started"))
            .unwrap_or(false)
            || first.try_wait().unwrap().is_some()
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let (code, _, o) = move_maildir(&env, &src, MB);
    let still_running = first.try_wait().unwrap().is_none();
    let status = first.wait().unwrap();
    assert!(status.success(), "the first agent must finish undisturbed");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    // Embedded moves lock the volume before the checkpoint; either refusal is clear.
    let refused = err.contains("another mailferry agent is running a pass of this move")
        || err.contains("in use by another process");
    if still_running {
        // The first agent was running the whole time the second one ran.
        assert!(code != 0 && refused, "{}", describe(&o));
    } else {
        // The first may have ended before the second looked: then the second ran a
        // (no-op) pass; otherwise it was refused.
        assert!(code == 0 || refused, "{}", describe(&o));
    }
    verify_and_compare(&env, &src);
}
