//! [`SizeRewriter`]: rewrites every `RFC822.SIZE <n>` in a stream of IMAP server responses
//! to `n + delta`, leaving everything else byte for byte. Pure (no I/O): it is fed the
//! stream in whatever pieces the network gave and keeps what it needs across them.
//!
//! Only protocol text is rewritten: message data arrives in literals (`{n}\r\n` then n
//! bytes), which pass through untouched whatever they contain, and so do quoted strings
//! (a subject may well say "RFC822.SIZE 5"). It is not an IMAP parser: it only knows
//! where lines, literals and quoted strings begin and end.

/// A response line longer than this without its end is passed on unrewritten (Dovecot
/// never sends one; the bound keeps a hostile stream from growing the buffer).
const MAX_LINE: usize = 1 << 20;

const ATTR: &[u8] = b"RFC822.SIZE";

/// Rewrites `RFC822.SIZE` values in a server-to-client IMAP stream (see the module doc).
#[derive(Debug)]
pub struct SizeRewriter {
    delta: i64,
    /// The line (up to its LF) being read, outside literals.
    line: Vec<u8>,
    /// Bytes of the current literal still to pass through.
    literal_left: u64,
}

impl SizeRewriter {
    /// A rewriter adding `delta` (maybe negative; a result below 0 becomes 0).
    pub fn new(delta: i64) -> SizeRewriter {
        SizeRewriter {
            delta,
            line: Vec::new(),
            literal_left: 0,
        }
    }

    /// Feeds the next bytes of the stream, appending what may be sent on to `out`;
    /// returns how many sizes it rewrote. A line is held back until its end arrives.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> u64 {
        let mut rewritten = 0;
        while !input.is_empty() {
            if self.literal_left > 0 {
                let take = input.len().min(self.literal_left as usize);
                out.extend_from_slice(&input[..take]);
                self.literal_left -= take as u64;
                input = &input[take..];
                continue;
            }
            match input.iter().position(|&b| b == b'\n') {
                Some(lf) => {
                    self.line.extend_from_slice(&input[..=lf]);
                    input = &input[lf + 1..];
                    rewritten += rewrite_line(&self.line, self.delta, out);
                    self.literal_left = literal_len(&self.line).unwrap_or(0);
                    self.line.clear();
                }
                None => {
                    self.line.extend_from_slice(input);
                    input = &[];
                    if self.line.len() > MAX_LINE {
                        out.append(&mut self.line);
                    }
                }
            }
        }
        rewritten
    }

    /// The end of the stream: whatever is held back goes out as it is.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.line);
    }
}

/// Copies one line (or the part of one after a literal) to `out`, rewriting every
/// `RFC822.SIZE <digits>` outside quoted strings; returns how many.
fn rewrite_line(line: &[u8], delta: i64, out: &mut Vec<u8>) -> u64 {
    let mut rewritten = 0;
    let (mut i, mut quoted) = (0, false);
    while i < line.len() {
        let b = line[i];
        if quoted {
            out.push(b);
            i += 1;
            match b {
                b'\\' if i < line.len() => {
                    out.push(line[i]);
                    i += 1;
                }
                b'"' => quoted = false,
                _ => {}
            }
            continue;
        }
        if b == b'"' {
            quoted = true;
        } else if let Some((n, len)) = size_at(line, i) {
            out.extend_from_slice(&line[i..i + ATTR.len() + 1]);
            let lied = (n as i128 + delta as i128).clamp(0, u64::MAX as i128) as u64;
            out.extend_from_slice(lied.to_string().as_bytes());
            i += len;
            rewritten += 1;
            continue;
        }
        out.push(b);
        i += 1;
    }
    rewritten
}

/// `RFC822.SIZE <digits>` as an attribute at `i` (after `(` or a space): its value and
/// the length of the whole match.
fn size_at(line: &[u8], i: usize) -> Option<(u64, usize)> {
    let rest = &line[i..];
    if !rest
        .get(..ATTR.len())
        .is_some_and(|a| a.eq_ignore_ascii_case(ATTR))
    {
        return None;
    }
    if i > 0 && !matches!(line[i - 1], b'(' | b' ') {
        return None;
    }
    let after = &rest[ATTR.len()..];
    if after.first() != Some(&b' ') {
        return None;
    }
    let digits = after[1..].iter().take_while(|b| b.is_ascii_digit()).count();
    let n: u64 = std::str::from_utf8(&after[1..1 + digits])
        .ok()?
        .parse()
        .ok()?;
    Some((n, ATTR.len() + 1 + digits))
}

/// The length of the literal announced at the end of `line` (`{n}`, `{n+}` or `~{n}`
/// before the line end), if one is.
fn literal_len(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_suffix(b"}")?;
    let line = line.strip_suffix(b"+").unwrap_or(line);
    let open = line.iter().rposition(|&b| b == b'{')?;
    let digits = &line[open + 1..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}
