use super::*;

fn endpoint(dir: &Path, text: &str) -> Endpoint {
    let p = dir.join("ep.toml");
    std::fs::write(&p, text).unwrap();
    Endpoint::load(&p).unwrap()
}

#[test]
fn exchange_csv_with_bom_quotes_and_extra_columns() {
    let d = tempfile::tempdir().unwrap();
    let ep = endpoint(d.path(), "kind = \"imap\"\nhost = \"imap.example.com\"\n");
    let csv = d.path().join("u.csv");
    // A BOM (Excel), other capitalisation, a quoted password with a comma and a quote,
    // a notes column spanning two lines, a blank line.
    std::fs::write(
        &csv,
        "\u{feff}emailaddress,USERNAME,Notes,Password\n\
         a@example.com,a,\"two\nlines\",\"p,w\"\"1\"\n\
         \n\
         b@,b,,x\n",
    )
    .unwrap();
    let e = read_users(&csv, &ep, &HashSet::new())
        .unwrap_err()
        .to_string();
    // Rows as a spreadsheet numbers them: a cell of two lines is one row, a blank line
    // is a row.
    assert!(e.contains("row 4, EmailAddress"), "{e}");
    assert!(!e.contains("p,w"), "{e}");
    std::fs::write(
        &csv,
        "\u{feff}emailaddress,USERNAME,Notes,Password\n\
         a@example.com,a,\"two\nlines\",\"p,w\"\"1\"\n",
    )
    .unwrap();
    let u = read_users(&csv, &ep, &HashSet::new()).unwrap();
    assert_eq!(u.users.len(), 1);
    assert_eq!(u.users[0].password, PasswordSource::Csv);
    let pw = inline_passwords(&csv).unwrap();
    assert_eq!(pw["a@example.com"].expose(), b"p,w\"1");
}

#[test]
fn file_sources_need_no_password_and_known_addresses_are_set_aside() {
    let d = tempfile::tempdir().unwrap();
    let ep = endpoint(d.path(), "kind = \"maildir\"\nroot = \"/m/{user}\"\n");
    let csv = d.path().join("u.csv");
    std::fs::write(
        &csv,
        "EmailAddress,UserName\na@example.com,a\nB@Example.com,b\n",
    )
    .unwrap();
    let known: HashSet<String> = ["b@example.com".to_string()].into();
    let u = read_users(&csv, &ep, &known).unwrap();
    assert_eq!(u.users.len(), 1);
    assert_eq!(u.users[0].password, PasswordSource::None);
    assert_eq!(u.already, [(3, "b@example.com".to_string())]);
    assert!(check_name("spring-2025").is_ok());
    assert!(check_name("../x").is_err() && check_name(".hidden").is_err());
}
