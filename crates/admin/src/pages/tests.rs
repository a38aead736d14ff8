//! Unit tests of the pages: the wizard's draft and checks, and escaping in templates.

use super::wizard::{Draft, WizardPage};
use super::Nav;
use askama::Template;
use std::collections::HashMap;

fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn nav(admin: bool) -> Nav {
    Nav {
        name: "ann".into(),
        role: if admin { "admin" } else { "auditor" }.into(),
        csrf: "tok\"en".into(),
        admin,
    }
}

#[test]
fn step_one_checks_name_and_type_and_keeps_values() {
    let mut d = Draft::new();
    d.apply(1, &form(&[("name", " bad name! "), ("kind", "mbox")]));
    assert_eq!(d.name, "bad name!");
    assert_eq!(d.kind, "mbox");
    let e = d.check_name_type();
    assert!(e["name"].contains("batch name"), "{e:?}");
    d.apply(1, &form(&[("name", "spring-2026"), ("kind", "floppy")]));
    let e = d.check_name_type();
    assert!(!e.contains_key("name") && e.contains_key("kind"), "{e:?}");
}

#[test]
fn settings_report_every_bad_field_at_once() {
    let mut d = Draft::new();
    d.apply(
        4,
        &form(&[
            ("profile", "relative.toml"),
            ("bad_item_limit", "-1"),
            ("large_item_limit", "huge"),
            ("throttle", "0"),
            ("concurrency", "100"),
        ]),
    );
    let e = d.check_settings();
    let keys: Vec<_> = e.keys().copied().collect();
    assert_eq!(
        keys,
        [
            "bad_item_limit",
            "concurrency",
            "large_item_limit",
            "profile",
            "throttle"
        ]
    );
    assert!(e["large_item_limit"].contains("not a size"), "{e:?}");
    d.apply(
        4,
        &form(&[
            ("profile", ""),
            ("bad_item_limit", "5"),
            ("large_item_limit", "35MB"),
            ("throttle", ""),
            ("concurrency", "2"),
        ]),
    );
    assert!(d.check_settings().is_empty());
}

#[test]
fn schedule_times_are_utc_and_recipients_addresses() {
    let mut d = Draft::new();
    d.apply(
        5,
        &form(&[
            ("start", "later"),
            ("start_at", ""),
            ("complete", "after"),
            ("complete_after", "2030-07-01T22:00"),
            ("recipients", "ops@example.com, not an address"),
        ]),
    );
    let e = d.check_schedule();
    assert!(
        e.contains_key("start_at") && e.contains_key("recipients"),
        "{e:?}"
    );
    assert!(!e.contains_key("complete_after"), "{e:?}");
    assert_eq!(d.complete_after_rfc3339().unwrap(), "2030-07-01T22:00:00Z");
}

#[test]
fn a_new_csv_drops_the_checked_rows_and_back_keeps_it() {
    let mut d = Draft::new();
    d.apply(
        3,
        &form(&[("csv_text", "EmailAddress,UserName\r\na@x.org,a\r\n")]),
    );
    assert_eq!(d.csv, "EmailAddress,UserName\na@x.org,a\n");
    d.users = vec![(2, "a@x.org".into(), "a".into())];
    // The same text again (Back, then Next): the checked rows stay.
    d.apply(
        3,
        &form(&[
            ("csv_text", "EmailAddress,UserName\na@x.org,a\n"),
            ("csv_file", ""),
        ]),
    );
    assert_eq!(d.users.len(), 1);
    // An uploaded file wins over the text box and needs a new check.
    d.apply(
        3,
        &form(&[
            ("csv_text", "x"),
            ("csv_file", "EmailAddress,UserName\nb@x.org,b\n"),
        ]),
    );
    assert!(d.csv.contains("b@x.org") && d.users.is_empty());
}

#[test]
fn first_problem_sends_the_review_back_to_the_right_step() {
    let mut d = Draft::new();
    assert_eq!(d.first_problem().unwrap().0, 1);
    d.name = "b1".into();
    assert_eq!(d.first_problem().unwrap().0, 2);
    d.endpoint = "ep".into();
    assert_eq!(d.first_problem().unwrap().0, 3);
    d.users = vec![(2, "a@x.org".into(), "a".into())];
    d.large_item_limit = "lots".into();
    assert_eq!(d.first_problem().unwrap().0, 4);
    d.large_item_limit.clear();
    assert!(d.first_problem().is_none());
}

#[test]
fn the_wizard_page_escapes_the_draft_and_disables_start_for_auditors() {
    let mut d = Draft::new();
    d.name = "<script>alert(1)</script>".into();
    d.users = vec![(2, "a@x.org".into(), "a".into())];
    let html = WizardPage::new(&nav(false), 6, d.clone()).render().unwrap();
    assert!(
        !html.contains("<script>alert"),
        "unescaped draft in the page"
    );
    assert!(html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"));
    // The CSRF token is an attribute value: its quote is escaped too.
    assert!(!html.contains("tok\"en"));
    assert!(
        html.contains("id=\"start\" disabled"),
        "auditor's Start is enabled"
    );
    let html = WizardPage::new(&nav(true), 6, d).render().unwrap();
    assert!(html.contains("id=\"start\">"), "admin's Start is disabled");
    // The hidden draft round-trips.
    assert!(html.contains("name=\"draft\" value=\"{"));
}
