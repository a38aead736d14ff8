//! The wire frame codec of docs/wire-protocol.md.
//!
//! A frame is `kind: u8`, `len: u32` big-endian, then `len` payload bytes. This module
//! only turns frames into bytes and bytes into frames; it never reads a socket. Decoding
//! is incremental: [`Frame::decode`] returns `Ok(None)` until a whole frame is buffered,
//! and refuses (never panics on) anything malformed, including oversized lengths, so a
//! hostile peer cannot make the reader allocate more than [`MAX_PAYLOAD`].

use crate::{CoreError, Flags, FolderName, MoveId, SourceId};
use bytes::{Buf, Bytes, BytesMut};

/// Protocol version carried in the OPEN frame.
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest payload a decoder accepts, for any frame.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Bytes of the frame header (`kind` + `len`).
pub const HEADER_LEN: usize = 5;
/// The HTTP `Upgrade` token that switches a connection to this protocol.
pub const UPGRADE_TOKEN: &str = "mailferry-frames/1";

/// The request that switches a connection to frames (docs/wire-protocol.md,
/// "Upgrade"): `POST path` with `Host`, the bearer `authorization` (marked sensitive, so
/// that no debug output or HPACK table keeps it), `Connection: upgrade` and
/// `Upgrade: mailferry-frames/1`, and [`FENCE_HEADER`] when the session has a fencing
/// number. One builder for the agent and the proxy's forwarder.
pub fn upgrade_request(
    path: &str,
    host: &str,
    port: u16,
    mut authorization: http::HeaderValue,
    fence: Option<u64>,
) -> Result<http::Request<http_body_util::Empty<Bytes>>, http::Error> {
    use http::header::{AUTHORIZATION, CONNECTION, HOST, UPGRADE};
    authorization.set_sensitive(true);
    let mut req = http::Request::post(path)
        .header(HOST, format!("{host}:{port}"))
        .header(AUTHORIZATION, authorization)
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, UPGRADE_TOKEN);
    if let Some(f) = fence {
        req = req.header(FENCE_HEADER, f);
    }
    req.body(http_body_util::Empty::new())
}

/// ERROR code (and HTTP status) of a fenced refusal: a newer lease owns the mailbox, so
/// this session may not write (docs/wire-protocol.md §3.5). Permanent: do not retry.
pub const ERROR_FENCED: u16 = 412;

/// Request header of a fenced session (docs/wire-protocol.md §3.7): the same fencing
/// number as its OPEN frame, in decimal. It lets the server fence off the session that
/// holds the mailbox before it answers 409; OPEN stays the authority.
pub const FENCE_HEADER: &str = "mailferry-fence";

/// The fencing number of a [`FENCE_HEADER`] value: decimal digits only (no sign, no
/// spaces), at most `u64::MAX`; `None` for anything else.
pub fn parse_fence(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Frame kinds; client-to-server below 0x80, server-to-client from 0x80.
pub mod kind {
    /// Client: start of a session.
    pub const OPEN: u8 = 0x01;
    /// Client: start of one message.
    pub const MESSAGE: u8 = 0x02;
    /// Client: a piece of the current message's body.
    pub const DATA: u8 = 0x03;
    /// Client: end of the current message, with its SHA-256.
    pub const END: u8 = 0x04;
    /// Client: make everything sent so far durable and acknowledge it now.
    pub const FLUSH: u8 = 0x05;
    /// Client: no more messages; close after the final acknowledgement.
    pub const CLOSE: u8 = 0x06;
    /// Client: remove every stored message of a folder and source id (mirror passes).
    pub const DELETE: u8 = 0x07;
    /// Client: replace the flags of every stored message of a folder and source id.
    pub const FLAGS: u8 = 0x08;
    /// Server: messages that are now durable.
    pub const ACK: u8 = 0x81;
    /// Server: one message refused, with the reason; the session goes on.
    pub const REJECT: u8 = 0x82;
    /// Server: the session failed and ends.
    pub const ERROR: u8 = 0x83;
    /// Server: answer to CLOSE, everything is durable.
    pub const CLOSED: u8 = 0x84;
}

/// What happened to an acknowledged MESSAGE, DELETE or FLAGS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckStatus {
    /// MESSAGE: newly stored and durable.
    Stored = 0,
    /// MESSAGE: already in the store (same folder, source id and content); nothing written.
    Duplicate = 1,
    /// DELETE or FLAGS: the change is durable.
    Applied = 2,
    /// DELETE or FLAGS: the mailbox holds no message with that folder and source id;
    /// nothing changed.
    NotFound = 3,
}

impl AckStatus {
    /// The status of a wire byte, `None` for a value this version does not define.
    pub fn from_u8(b: u8) -> Option<AckStatus> {
        match b {
            0 => Some(AckStatus::Stored),
            1 => Some(AckStatus::Duplicate),
            2 => Some(AckStatus::Applied),
            3 => Some(AckStatus::NotFound),
            _ => None,
        }
    }
}

/// The per-message header frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageHeader {
    /// Sequence number chosen by the client, unique within the session.
    pub seq: u64,
    /// Folder at the source.
    pub folder: FolderName,
    /// The source's id of the message.
    pub source_id: SourceId,
    /// Flags at the source.
    pub flags: Flags,
    /// Internal date, Unix seconds.
    pub internal_date: i64,
    /// Exact size of the body that follows.
    pub size: u64,
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Start of a session.
    Open {
        /// Protocol version of the client.
        version: u16,
        /// The move this session belongs to.
        move_id: MoveId,
        /// The fencing number of the lease this session writes under (a worker's);
        /// `None` for a session without a lease, whose OPEN keeps its 18-byte form.
        fence: Option<u64>,
    },
    /// Start of one message.
    Message(MessageHeader),
    /// A piece of the current message. `Bytes`, so a reader can hand the payload on
    /// without copying it out of its read buffer ([`FrameBuffer::next_frame`]).
    Data(Bytes),
    /// End of the current message.
    End {
        /// Sequence number of the message being ended.
        seq: u64,
        /// SHA-256 of the whole body, as the client computed it.
        sha256: [u8; 32],
    },
    /// Remove every stored message of `folder` + `source_id` from the mailbox (the
    /// message was deleted at the source). Acknowledged `Applied` or `NotFound`.
    Delete {
        /// Sequence number, in the same space as MESSAGE's.
        seq: u64,
        /// Folder at the source.
        folder: FolderName,
        /// The source's id of the message.
        source_id: SourceId,
    },
    /// Replace the flags of every stored message of `folder` + `source_id` (they changed
    /// at the source). Acknowledged `Applied` or `NotFound`.
    SetFlags {
        /// Sequence number, in the same space as MESSAGE's.
        seq: u64,
        /// Folder at the source.
        folder: FolderName,
        /// The source's id of the message.
        source_id: SourceId,
        /// The flags now at the source.
        flags: Flags,
    },
    /// Commit now.
    Flush,
    /// No more messages.
    Close,
    /// Durable messages.
    Ack(Vec<(u64, AckStatus)>),
    /// One message refused.
    Reject {
        /// The refused message.
        seq: u64,
        /// Why, in words an admin can act on.
        reason: String,
    },
    /// Fatal session error.
    Error {
        /// HTTP-like status code (see docs/wire-protocol.md).
        code: u16,
        /// What went wrong.
        message: String,
    },
    /// Everything is durable; the server closes.
    Closed,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).expect("strings in frames are validated to < 64 KiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The fields DELETE and FLAGS start with: which message of the mailbox they change.
fn put_target(out: &mut Vec<u8>, seq: u64, folder: &FolderName, source_id: &SourceId) {
    out.extend_from_slice(&seq.to_be_bytes());
    put_str(out, folder.as_str());
    put_str(out, source_id.as_str());
}

/// Writes the 5-byte header of a DATA frame; the caller appends `len` body bytes.
/// This lets a sender frame a buffer it already holds without copying it.
pub fn encode_data_header(len: usize, out: &mut Vec<u8>) {
    assert!(
        len <= MAX_PAYLOAD,
        "DATA frame of {len} bytes exceeds MAX_PAYLOAD"
    );
    out.push(kind::DATA);
    out.extend_from_slice(&(len as u32).to_be_bytes());
}

impl Frame {
    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        let k = match self {
            Frame::Open {
                version,
                move_id,
                fence,
            } => {
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&move_id.0);
                if let Some(f) = fence {
                    out.extend_from_slice(&f.to_be_bytes());
                }
                kind::OPEN
            }
            Frame::Message(h) => {
                out.extend_from_slice(&h.seq.to_be_bytes());
                out.extend_from_slice(&h.internal_date.to_be_bytes());
                out.extend_from_slice(&h.size.to_be_bytes());
                put_str(out, h.folder.as_str());
                put_str(out, h.source_id.as_str());
                put_str(out, h.flags.as_str());
                kind::MESSAGE
            }
            Frame::Data(d) => {
                out.extend_from_slice(d);
                kind::DATA
            }
            Frame::End { seq, sha256 } => {
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(sha256);
                kind::END
            }
            Frame::Delete {
                seq,
                folder,
                source_id,
            } => {
                put_target(out, *seq, folder, source_id);
                kind::DELETE
            }
            Frame::SetFlags {
                seq,
                folder,
                source_id,
                flags,
            } => {
                put_target(out, *seq, folder, source_id);
                put_str(out, flags.as_str());
                kind::FLAGS
            }
            Frame::Flush => kind::FLUSH,
            Frame::Close => kind::CLOSE,
            Frame::Ack(items) => {
                out.extend_from_slice(&(items.len() as u32).to_be_bytes());
                for (seq, st) in items {
                    out.extend_from_slice(&seq.to_be_bytes());
                    out.push(*st as u8);
                }
                kind::ACK
            }
            Frame::Reject { seq, reason } => {
                out.extend_from_slice(&seq.to_be_bytes());
                put_str(out, truncate_utf8(reason, 4096));
                kind::REJECT
            }
            Frame::Error { code, message } => {
                out.extend_from_slice(&code.to_be_bytes());
                put_str(out, truncate_utf8(message, 4096));
                kind::ERROR
            }
            Frame::Closed => kind::CLOSED,
        };
        let len = out.len() - start - HEADER_LEN;
        assert!(
            len <= MAX_PAYLOAD,
            "frame payload of {len} bytes exceeds MAX_PAYLOAD"
        );
        out[start] = k;
        out[start + 1..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    }

    /// Decodes one frame from the front of `buf`: `Ok(None)` if more bytes are needed,
    /// else the frame and how many bytes it used.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, CoreError> {
        let Some((k, len)) = whole_frame(buf)? else {
            return Ok(None);
        };
        let mut r = Reader {
            buf: &buf[HEADER_LEN..HEADER_LEN + len],
            kind: k,
        };
        let frame = match k {
            kind::OPEN => Frame::Open {
                version: r.u16()?,
                move_id: MoveId(r.array()?),
                // 18 bytes: no fence; 26: a fence; anything else is refused below (too
                // short) or as trailing bytes.
                fence: if r.buf.is_empty() {
                    None
                } else {
                    Some(r.u64()?)
                },
            },
            kind::MESSAGE => {
                let seq = r.u64()?;
                let internal_date = r.u64()? as i64;
                let size = r.u64()?;
                let folder = FolderName::parse(r.str()?)?;
                let source_id = SourceId::parse(r.str()?)?;
                let flags = r.flags()?;
                Frame::Message(MessageHeader {
                    seq,
                    folder,
                    source_id,
                    flags,
                    internal_date,
                    size,
                })
            }
            kind::DATA => Frame::Data(Bytes::copy_from_slice(r.rest())),
            kind::END => Frame::End {
                seq: r.u64()?,
                sha256: r.array()?,
            },
            kind::DELETE => Frame::Delete {
                seq: r.u64()?,
                folder: FolderName::parse(r.str()?)?,
                source_id: SourceId::parse(r.str()?)?,
            },
            kind::FLAGS => Frame::SetFlags {
                seq: r.u64()?,
                folder: FolderName::parse(r.str()?)?,
                source_id: SourceId::parse(r.str()?)?,
                flags: r.flags()?,
            },
            kind::FLUSH => Frame::Flush,
            kind::CLOSE => Frame::Close,
            kind::ACK => {
                let n = r.u32()? as usize;
                if n > r.buf.len() / 9 {
                    return Err(r.err("ACK count larger than its payload"));
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    let seq = r.u64()?;
                    let b = r.u8()?;
                    let Some(st) = AckStatus::from_u8(b) else {
                        return Err(r.err(&format!("unknown ACK status {b}")));
                    };
                    items.push((seq, st));
                }
                Frame::Ack(items)
            }
            kind::REJECT => Frame::Reject {
                seq: r.u64()?,
                reason: r.str()?.to_string(),
            },
            kind::ERROR => Frame::Error {
                code: r.u16()?,
                message: r.str()?.to_string(),
            },
            kind::CLOSED => Frame::Closed,
            other => {
                return Err(CoreError::Frame(format!(
                    "unknown frame kind 0x{other:02x}"
                )))
            }
        };
        if !r.buf.is_empty() {
            return Err(r.err("trailing bytes after the frame's fields"));
        }
        Ok(Some((frame, HEADER_LEN + len)))
    }
}

/// Reassembles frames from a byte stream read in arbitrary pieces.
///
/// Holds at most one partial frame plus what was read since the last drain, so a reader
/// that reads bounded pieces and drains after each uses bounded memory. A DATA frame's
/// payload is split off the buffer, not copied: a reader that reads straight into
/// [`FrameBuffer::read_space`] hands each body piece on without touching its bytes.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: BytesMut,
}

impl FrameBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read into (e.g. with `AsyncReadExt::read_buf`), with at least
    /// `min` bytes of spare capacity. Payloads split off earlier keep their own memory,
    /// so a new allocation is made when those are still alive.
    pub fn read_space(&mut self, min: usize) -> &mut BytesMut {
        self.buf.reserve(min);
        &mut self.buf
    }

    /// The next complete frame, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, CoreError> {
        match whole_frame(&self.buf)? {
            None => return Ok(None),
            Some((kind::DATA, len)) => {
                let mut frame = self.buf.split_to(HEADER_LEN + len);
                frame.advance(HEADER_LEN);
                return Ok(Some(Frame::Data(frame.freeze())));
            }
            Some(_) => {}
        }
        match Frame::decode(&self.buf)? {
            Some((f, n)) => {
                self.buf.advance(n);
                Ok(Some(f))
            }
            None => Ok(None),
        }
    }

    /// Bytes of a frame that has started but not finished (0 at a frame boundary).
    pub fn partial_len(&self) -> usize {
        self.buf.len()
    }
}

/// The kind and payload length of the frame at the front of `buf`, if all of it is
/// there; an error if its header declares more than [`MAX_PAYLOAD`].
fn whole_frame(buf: &[u8]) -> Result<Option<(u8, usize)>, CoreError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let k = buf[0];
    let len = u32::from_be_bytes(buf[1..5].try_into().expect("4 bytes")) as usize;
    if len > MAX_PAYLOAD {
        return Err(CoreError::Frame(format!(
            "frame kind 0x{k:02x} declares {len} bytes, more than the {MAX_PAYLOAD} allowed"
        )));
    }
    Ok((buf.len() >= HEADER_LEN + len).then_some((k, len)))
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Reader<'a> {
    buf: &'a [u8],
    kind: u8,
}

impl<'a> Reader<'a> {
    fn err(&self, what: &str) -> CoreError {
        CoreError::Frame(format!("frame kind 0x{:02x}: {what}", self.kind))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], CoreError> {
        if self.buf.len() < n {
            return Err(self.err("payload shorter than its fields"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], CoreError> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
    fn u8(&mut self) -> Result<u8, CoreError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, CoreError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, CoreError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, CoreError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn str(&mut self) -> Result<&'a str, CoreError> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        std::str::from_utf8(b).map_err(|_| self.err("string is not UTF-8"))
    }
    /// A flags string in its canonical form (letters, then ` keyword` each; both sorted
    /// and unique), so each set has one encoding.
    fn flags(&mut self) -> Result<Flags, CoreError> {
        let raw = self.str()?;
        let flags = Flags::parse(raw)?;
        if flags.as_str() != raw {
            return Err(self.err("flags must be sorted and unique"));
        }
        Ok(flags)
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

#[cfg(test)]
mod tests;
