//! `MANIFEST`: the one object that says which objects make up the volume now
//! (docs/volume-format.md, "Object storage"). Written last in every upload round, so a
//! reader of the bucket sees either the previous state or the new one, never a mix.

use serde::{Deserialize, Serialize};

/// The manifest's object key.
pub const MANIFEST: &str = "MANIFEST";
/// The writer lease's object key.
pub const LEASE: &str = "LEASE";
/// The header's object key.
pub const HEADER: &str = "volume.hdr";
/// The format this build writes and reads.
pub const FORMAT: &str = "mailferry-object-volume/1";

/// The bucket's view of the volume.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// Hex volume id (as in `volume.hdr`).
    pub volume_id: String,
    /// Rounds written so far; each manifest has the previous one's plus one.
    pub generation: u64,
    /// Who wrote it (host, process, lease holder id): for the admin, not checked.
    pub writer: String,
    /// Object key of the index checkpoint (`index/<generation>.sqlite`).
    pub index: String,
    /// SHA-256 (hex) of the index image: the checkpoint `index` with every delta of
    /// `index_deltas` applied.
    pub index_sha256: String,
    /// Changes to `index` since it was uploaded, applied in order (`crate::delta`;
    /// docs/volume-format.md "Index deltas"). Absent when empty, so a manifest without
    /// deltas is as before; a reader that does not know deltas refuses one that has
    /// them (unknown field) rather than restore a stale index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub index_deltas: Vec<IndexDelta>,
    /// Every segment the checkpoint references, by number.
    pub segments: Vec<SegmentEntry>,
    /// `audit.jsonl` up to `len`, as pieces.
    pub audit: FileEntry,
    /// `audit.head` as it was when `audit.len` was read, if the volume has one.
    pub audit_head: Option<String>,
}

/// One index delta object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexDelta {
    /// Its object key (`index/<generation>.delta`).
    pub key: String,
    /// Its size in bytes.
    pub len: u64,
}

/// One segment: a sealed object, or the pieces of its committed bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentEntry {
    /// Segment number.
    pub number: u64,
    /// Committed bytes (the end of its last indexed record).
    pub len: u64,
    /// True if the segment is uploaded whole as `segments/NNNNNNNN.seg` (it is closed:
    /// never appended to again); else `file.pieces` hold it.
    pub sealed: bool,
    /// The pieces of an open segment (empty once sealed).
    pub pieces: Vec<Piece>,
}

/// An append-only file kept as immutable pieces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Bytes covered, from 0.
    pub len: u64,
    /// Contiguous pieces from 0 to `len`.
    pub pieces: Vec<Piece>,
}

/// Bytes `start..end` of a file, in the object `<base>.d/<start>-<end>`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Piece {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Piece {
    /// The object key of this piece of the file whose object key is `base`.
    pub fn key(&self, base: &str) -> String {
        format!("{base}.d/{:020}-{:020}", self.start, self.end)
    }
}

/// The object key of segment `n` (sealed), and the base of its pieces.
pub fn segment_key(n: u64) -> String {
    format!("segments/{}", mailferry_store::segment::file_name(n))
}

/// The base key of the audit log's pieces.
pub const AUDIT_BASE: &str = "audit.jsonl";

/// The object key of the index delta of `generation`.
pub fn index_delta_key(generation: u64) -> String {
    format!("index/{generation:020}.delta")
}

/// The object key of the index checkpoint of `generation`.
pub fn index_key(generation: u64) -> String {
    format!("index/{generation:020}.sqlite")
}

impl Manifest {
    /// Every object key this manifest references (besides itself, the lease and the
    /// header).
    pub fn objects(&self) -> Vec<String> {
        let mut out = vec![self.index.clone()];
        out.extend(self.index_deltas.iter().map(|d| d.key.clone()));
        for s in &self.segments {
            let base = segment_key(s.number);
            if s.sealed {
                out.push(base);
            } else {
                out.extend(s.pieces.iter().map(|p| p.key(&base)));
            }
        }
        out.extend(self.audit.pieces.iter().map(|p| p.key(AUDIT_BASE)));
        out
    }

    /// Checks pieces are contiguous from 0 (a manifest a reader can restore from).
    pub fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "MANIFEST is of format {:?}; this build reads {FORMAT}",
                self.format
            ));
        }
        let contiguous = |pieces: &[Piece], len: u64| {
            let mut at = 0;
            for p in pieces {
                if p.start != at || p.end <= p.start {
                    return false;
                }
                at = p.end;
            }
            at == len
        };
        for s in &self.segments {
            if !s.sealed && !contiguous(&s.pieces, s.len) {
                return Err(format!("segment {} has gaps in its pieces", s.number));
            }
        }
        if !contiguous(&self.audit.pieces, self.audit.len) {
            return Err("the audit log has gaps in its pieces".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/vectors/object-storage/manifest.json: the manifest parses, checks, and
    /// references exactly the object keys the vector lists (docs/volume-format.md,
    /// "Object storage").
    #[test]
    fn manifest_vector() {
        let v: serde_json::Value = serde_json::from_str(include_str!(
            "../../../docs/vectors/object-storage/manifest.json"
        ))
        .unwrap();
        let m: Manifest = serde_json::from_value(v["manifest"].clone()).unwrap();
        m.check().unwrap();
        let want: Vec<String> = serde_json::from_value(v["objects"].clone()).unwrap();
        assert_eq!(m.objects(), want);
        assert_eq!(index_key(m.generation), m.index);
        // Round trip: what a writer PUTs reads back the same.
        let again: Manifest = serde_json::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn gaps_and_unknown_formats_are_refused() {
        let mut m = Manifest {
            format: FORMAT.into(),
            audit: FileEntry {
                len: 10,
                pieces: vec![Piece { start: 0, end: 4 }, Piece { start: 5, end: 10 }],
            },
            ..Default::default()
        };
        assert!(m.check().unwrap_err().contains("gaps"));
        m.audit.pieces[1].start = 4;
        m.check().unwrap();
        m.format = "mailferry-object-volume/2".into();
        assert!(m.check().unwrap_err().contains("this build reads"));
        let unknown = r#"{"format":"x","volume_id":"","generation":0,"writer":"","index":"","index_sha256":"","segments":[],"audit":{"len":0,"pieces":[]},"audit_head":null,"extra":1}"#;
        assert!(serde_json::from_str::<Manifest>(unknown).is_err());
    }
}
