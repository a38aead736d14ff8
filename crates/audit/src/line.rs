//! Reading a log file line by line without trusting it.
//!
//! A hostile or damaged file may hold one enormous "line"; this reader never buffers
//! more than a record may be long, but still consumes (and counts) the whole line so
//! offsets stay exact.

use std::io::{self, BufRead};

/// What [`read_line`] found.
pub(crate) struct LineInfo {
    /// Bytes consumed from the reader, including the newline if there was one.
    pub consumed: u64,
    /// True if the line ended with `\n`; false for a last line cut short.
    pub newline: bool,
    /// True if the line was longer than the limit; the buffer is then empty.
    pub too_long: bool,
}

/// Reads one line into `buf` (without the newline). `Ok(None)` at end of input.
pub(crate) fn read_line(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<LineInfo>> {
    buf.clear();
    let mut consumed = 0u64;
    let mut too_long = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok((consumed > 0).then_some(LineInfo {
                consumed,
                newline: false,
                too_long,
            }));
        }
        let newline_at = avail.iter().position(|&b| b == b'\n');
        let chunk = &avail[..newline_at.unwrap_or(avail.len())];
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = newline_at.map_or(avail.len(), |i| i + 1);
        r.consume(used);
        consumed += used as u64;
        if newline_at.is_some() {
            return Ok(Some(LineInfo {
                consumed,
                newline: true,
                too_long,
            }));
        }
    }
}
