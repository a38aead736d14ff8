//! IMAP modified UTF-7 (RFC 3501 §5.1.3), the encoding of non-ASCII folder names in
//! IMAP and on disk in Maildir++ (`.Entw&APw-rfe`).
//!
//! Decoding is strict: anything that is not valid modified UTF-7 is an error, never a
//! panic or a lossy guess, because a folder name must round-trip exactly.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

fn sextet(c: u8) -> Option<u32> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u32)
}

/// Encodes a folder name into modified UTF-7.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        out.push('&');
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out.push('-');
        pending.clear();
    };
    for c in s.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// Decodes modified UTF-7; errors name what is wrong.
pub fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if !(0x20..=0x7e).contains(&c) {
            return Err(format!("byte 0x{c:02x} at {i} is not printable ASCII"));
        }
        if c != b'&' {
            out.push(c as char);
            i += 1;
            continue;
        }
        let end = s[i + 1..]
            .find('-')
            .map(|p| i + 1 + p)
            .ok_or_else(|| format!("'&' at {i} has no closing '-'"))?;
        let run = &bytes[i + 1..end];
        if run.is_empty() {
            out.push('&');
        } else {
            let mut acc: u32 = 0;
            let mut nbits = 0;
            let mut units = Vec::new();
            let mut raw = Vec::new();
            for &b in run {
                let v =
                    sextet(b).ok_or_else(|| format!("invalid base64 character {:?}", b as char))?;
                acc = (acc << 6) | v;
                nbits += 6;
                if nbits >= 8 {
                    nbits -= 8;
                    raw.push((acc >> nbits) as u8);
                    acc &= (1 << nbits) - 1;
                }
            }
            if acc != 0 || raw.len() % 2 != 0 {
                return Err(format!(
                    "base64 run {:?} does not end on a UTF-16 unit",
                    &s[i..=end]
                ));
            }
            for pair in raw.chunks(2) {
                units.push(u16::from_be_bytes([pair[0], pair[1]]));
            }
            let text = String::from_utf16(&units)
                .map_err(|_| format!("run {:?} is not valid UTF-16", &s[i..=end]))?;
            if text.chars().all(|c| (' '..='~').contains(&c)) {
                return Err(format!("run {:?} encodes printable ASCII", &s[i..=end]));
            }
            out.push_str(&text);
        }
        i = end + 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3501_example_and_round_trips() {
        assert_eq!(
            encode("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(
            decode("~peter/mail/&U,BTFw-/&ZeVnLIqe-").unwrap(),
            "~peter/mail/台北/日本語"
        );
        assert_eq!(encode("Entwürfe"), "Entw&APw-rfe");
        for s in ["Entwürfe", "a&b", "日本語", "Ünïcödé 😀 x", "&", "plain"] {
            assert_eq!(decode(&encode(s)).unwrap(), s);
        }
    }

    #[test]
    fn known_encodings() {
        let cases = [
            ("INBOX", "INBOX"),
            ("Entwürfe", "Entw&APw-rfe"),
            ("日本語", "&ZeVnLIqe-"),
            ("a&b", "a&-b"),
            ("&", "&-"),
            ("Reçus", "Re&AOc-us"),
            ("Projekte/日本語", "Projekte/&ZeVnLIqe-"),
            ("😀 smile", "&2D3eAA- smile"),
            ("", ""),
        ];
        for (plain, wire) in cases {
            assert_eq!(encode(plain), wire, "{plain}");
            assert_eq!(decode(wire).unwrap(), plain, "{wire}");
        }
        for s in [
            "Ünïcödé & more",
            "Привет/мир",
            "mixed 日本 and & ü",
            "a\u{7f}b",
            "tab\tname",
        ] {
            assert_eq!(decode(&encode(s)).unwrap(), s);
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in ["Entw&APw", "&A.w-", "&APw/-", "&AP-", "&APx-", "&2D0-"] {
            assert!(decode(bad).is_err(), "{bad:?} decoded");
        }
        for bad in ["&", "&AP", "&APw", "&!!-", "caf\u{e9}", "&AGE-"] {
            assert!(decode(bad).is_err(), "{bad:?} decoded");
        }
    }
}
