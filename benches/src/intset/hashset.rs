//! Hash set with chained buckets: word `k` is the chain link out of node `k`; words
//! `range..range + buckets` are the bucket heads.

use super::{NIL, Read, Structure, Write};
use stm_core::Abort;

/// A hash set of keys (TinySTM's `intset` "hash set"): one bucket per two keys of the range
/// (a power of two), unsorted chains, multiplicative hashing.
#[derive(Debug, Clone, Copy)]
pub struct HashSet {
    range: usize,
    /// log2 of the bucket count.
    bits: u32,
}

impl HashSet {
    #[inline]
    fn bucket(&self, k: u32) -> usize {
        if self.bits == 0 {
            return self.range;
        }
        self.range + (k.wrapping_mul(0x9E37_79B1) >> (32 - self.bits)) as usize
    }

    /// The word that links to `k` in its chain, and `k`'s node if present (else NIL).
    #[inline]
    fn find<M: Read>(&self, m: &M, k: u32) -> Result<(usize, u32), Abort> {
        let mut prev = self.bucket(k);
        let mut cur = m.get(prev)?;
        while cur != NIL && cur != k {
            prev = cur as usize;
            cur = m.get(prev)?;
        }
        Ok((prev, cur))
    }
}

impl Structure for HashSet {
    const NAME: &'static str = "hashset";

    fn new(range: u32) -> Self {
        let buckets = (range / 2).max(1).next_power_of_two();
        HashSet {
            range: range as usize,
            bits: buckets.trailing_zeros(),
        }
    }

    fn empty(&self) -> Vec<u32> {
        vec![NIL; self.range + (1 << self.bits)]
    }

    fn contains<M: Read>(&self, m: &M, k: u32) -> Result<bool, Abort> {
        Ok(self.find(m, k)?.1 == k)
    }

    fn insert<M: Write>(&self, m: &mut M, k: u32) -> Result<bool, Abort> {
        let b = self.bucket(k);
        let head = m.get(b)?;
        let mut cur = head;
        while cur != NIL {
            if cur == k {
                return Ok(false);
            }
            cur = m.get(cur as usize)?;
        }
        m.set(k as usize, head)?;
        m.set(b, k)?;
        Ok(true)
    }

    fn remove<M: Write>(&self, m: &mut M, k: u32) -> Result<bool, Abort> {
        let (prev, cur) = self.find(m, k)?;
        if cur != k {
            return Ok(false);
        }
        let next = m.get(k as usize)?;
        m.set(prev, next)?;
        Ok(true)
    }

    fn check(&self, words: &[u32]) -> Result<Vec<u32>, String> {
        let mut out = Vec::new();
        for b in self.range..self.range + (1 << self.bits) {
            let mut cur = words[b];
            let mut steps = 0;
            while cur != NIL {
                if cur as usize >= self.range {
                    return Err(format!("hashset: link to {cur}, outside the range"));
                }
                if self.bucket(cur) != b {
                    return Err(format!("hashset: {cur} in the wrong bucket"));
                }
                steps += 1;
                if steps > self.range {
                    return Err("hashset: a chain loops".into());
                }
                out.push(cur);
                cur = words[cur as usize];
            }
        }
        out.sort_unstable();
        if out.windows(2).any(|w| w[0] == w[1]) {
            return Err("hashset: a key is linked twice".into());
        }
        Ok(out)
    }
}
