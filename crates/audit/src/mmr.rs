//! The running Merkle root of a log's records (a Merkle mountain range), carried by the
//! periodic `audit.checkpoint` records.
//!
//! Leaf = SHA-256(`0x00` || line) for each record line (without its newline); two peaks
//! of equal height merge into SHA-256(`0x01` || left || right); the root folds the peaks
//! from the right: `acc = last peak`, then `acc = SHA-256(0x01 || peak || acc)` for each
//! peak before it. The root of no records is SHA-256 of the empty string. Adding a record
//! costs O(log n) and the state is at most 64 hashes, so the writer keeps it in memory.

use ring::digest::{digest, Context, SHA256};

/// Records between two checkpoints (the checkpoint is the record after every 1000th).
pub const CHECKPOINT_EVERY: u64 = 1000;

/// Event of the checkpoint records; reserved for the log itself.
pub const CHECKPOINT_EVENT: &str = "audit.checkpoint";

fn node(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    let mut c = Context::new(&SHA256);
    c.update(&[1]);
    c.update(l);
    c.update(r);
    c.finish().as_ref().try_into().expect("32 bytes")
}

/// The running root's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mmr {
    peaks: Vec<(u32, [u8; 32])>,
    leaves: u64,
}

impl Mmr {
    /// Adds one record line.
    pub fn push_line(&mut self, line: &[u8]) {
        let mut c = Context::new(&SHA256);
        c.update(&[0]);
        c.update(line);
        let mut h: [u8; 32] = c.finish().as_ref().try_into().expect("32 bytes");
        let mut height = 0;
        while let Some(&(ph, p)) = self.peaks.last() {
            if ph != height {
                break;
            }
            self.peaks.pop();
            h = node(&p, &h);
            height += 1;
        }
        self.peaks.push((height, h));
        self.leaves += 1;
    }

    /// Records added so far.
    pub fn leaves(&self) -> u64 {
        self.leaves
    }

    /// The peaks as `(height, hash)`, highest first: with [`Mmr::leaves`], the whole
    /// state, for a snapshot ([`crate::LogMark`]).
    pub fn peaks(&self) -> &[(u32, [u8; 32])] {
        &self.peaks
    }

    /// Rebuilds the state from [`Mmr::peaks`] and [`Mmr::leaves`]; `None` unless the
    /// peaks are exactly the mountains of `leaves` records (heights strictly falling,
    /// one per set bit of `leaves`).
    pub fn from_parts(leaves: u64, peaks: Vec<(u32, [u8; 32])>) -> Option<Mmr> {
        let mut expected = Vec::new();
        for h in (0..64u32).rev() {
            if leaves & (1u64 << h) != 0 {
                expected.push(h);
            }
        }
        let heights: Vec<u32> = peaks.iter().map(|(h, _)| *h).collect();
        (heights == expected).then_some(Mmr { peaks, leaves })
    }

    /// The root over every record added so far, hex.
    pub fn root(&self) -> String {
        let mut it = self.peaks.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return hex::encode(digest(&SHA256, b""));
        };
        for (_, p) in it {
            acc = node(p, &acc);
        }
        hex::encode(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same root computed the slow way: a balanced tree over the leaves of each
    /// power-of-two mountain, mountains folded from the right.
    fn slow_root(lines: &[&[u8]]) -> String {
        let leaves: Vec<[u8; 32]> = lines
            .iter()
            .map(|l| {
                let mut c = Context::new(&SHA256);
                c.update(&[0]);
                c.update(l);
                c.finish().as_ref().try_into().unwrap()
            })
            .collect();
        let mut mountains = Vec::new();
        let mut rest = &leaves[..];
        while !rest.is_empty() {
            let size = 1usize << (usize::BITS - 1 - rest.len().leading_zeros());
            let mut level: Vec<[u8; 32]> = rest[..size].to_vec();
            while level.len() > 1 {
                level = level.chunks(2).map(|p| node(&p[0], &p[1])).collect();
            }
            mountains.push(level[0]);
            rest = &rest[size..];
        }
        let mut acc = *mountains.last().unwrap();
        for m in mountains.iter().rev().skip(1) {
            acc = node(m, &acc);
        }
        hex::encode(acc)
    }

    #[test]
    fn incremental_root_matches_the_tree() {
        let owned: Vec<Vec<u8>> = (0..37).map(|i| format!("line {i}").into_bytes()).collect();
        let mut m = Mmr::default();
        assert_eq!(m.root(), hex::encode(digest(&SHA256, b"")));
        for n in 1..=owned.len() {
            m.push_line(&owned[n - 1]);
            let lines: Vec<&[u8]> = owned[..n].iter().map(|v| v.as_slice()).collect();
            assert_eq!(m.root(), slow_root(&lines), "after {n} lines");
        }
        assert_eq!(m.leaves(), 37);
        let back = Mmr::from_parts(m.leaves(), m.peaks().to_vec()).unwrap();
        assert_eq!(back, m);
        assert!(Mmr::from_parts(36, m.peaks().to_vec()).is_none());
    }
}
