//! Skip list: node `k` owns words `k * levels .. (k + 1) * levels` (its link at each level);
//! node `range` is the head, with every level.

use super::{NIL, Read, Structure, Write};
use stm_core::Abort;

/// The most levels a skip list uses.
const MAX_LEVELS: usize = 16;

/// A skip list of keys (TinySTM's `intset` "skip list"). Levels: `ceil(log2(range))`; node
/// `k`'s height is fixed by a hash of `k` (geometric, p = 1/2), so a reused slot keeps its
/// height and no random state is needed inside transactions.
#[derive(Debug, Clone, Copy)]
pub struct SkipList {
    range: usize,
    levels: usize,
}

impl SkipList {
    #[inline]
    fn head(&self) -> usize {
        self.range
    }

    #[inline]
    fn link(&self, node: usize, level: usize) -> usize {
        node * self.levels + level
    }

    /// Height of node `k`: 1 + the number of trailing zeros of a hash of `k`, capped.
    #[inline]
    fn height(&self, k: u32) -> usize {
        let h = u64::from(k)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            >> 32;
        1 + (h.trailing_zeros() as usize).min(self.levels - 1)
    }

    /// Fills `preds[l]` with the last node before `k` at each level; returns the node after
    /// `preds[0]` at level 0 (the candidate for `k`).
    #[inline]
    fn find<M: Read>(&self, m: &M, k: u32, preds: &mut [usize; MAX_LEVELS]) -> Result<u32, Abort> {
        let mut x = self.head();
        let mut next = NIL;
        for l in (0..self.levels).rev() {
            next = m.get(self.link(x, l))?;
            while next != NIL && next < k {
                x = next as usize;
                next = m.get(self.link(x, l))?;
            }
            preds[l] = x;
        }
        Ok(next)
    }
}

impl Structure for SkipList {
    const NAME: &'static str = "skiplist";

    fn new(range: u32) -> Self {
        let levels = (32 - range.saturating_sub(1).leading_zeros()) as usize;
        SkipList {
            range: range as usize,
            levels: levels.clamp(1, MAX_LEVELS),
        }
    }

    fn empty(&self) -> Vec<u32> {
        vec![NIL; (self.range + 1) * self.levels]
    }

    fn contains<M: Read>(&self, m: &M, k: u32) -> Result<bool, Abort> {
        let mut x = self.head();
        for l in (0..self.levels).rev() {
            let mut next = m.get(self.link(x, l))?;
            while next != NIL && next < k {
                x = next as usize;
                next = m.get(self.link(x, l))?;
            }
            if next == k {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn insert<M: Write>(&self, m: &mut M, k: u32) -> Result<bool, Abort> {
        let mut preds = [0usize; MAX_LEVELS];
        if self.find(m, k, &mut preds)? == k {
            return Ok(false);
        }
        for (l, &p) in preds.iter().enumerate().take(self.height(k)) {
            let next = m.get(self.link(p, l))?;
            m.set(self.link(k as usize, l), next)?;
            m.set(self.link(p, l), k)?;
        }
        Ok(true)
    }

    fn remove<M: Write>(&self, m: &mut M, k: u32) -> Result<bool, Abort> {
        let mut preds = [0usize; MAX_LEVELS];
        if self.find(m, k, &mut preds)? != k {
            return Ok(false);
        }
        for (l, &p) in preds.iter().enumerate().take(self.height(k)) {
            let next = m.get(self.link(k as usize, l))?;
            m.set(self.link(p, l), next)?;
        }
        Ok(true)
    }

    fn check(&self, words: &[u32]) -> Result<Vec<u32>, String> {
        let mut below: Option<Vec<u32>> = None;
        for l in 0..self.levels {
            let mut keys = Vec::new();
            let mut cur = words[self.link(self.head(), l)];
            while cur != NIL {
                if cur as usize >= self.range {
                    return Err(format!("skiplist: link to {cur} at level {l}"));
                }
                if keys.last().is_some_and(|&p| p >= cur) {
                    return Err(format!("skiplist: level {l} out of order at {cur}"));
                }
                if self.height(cur) <= l {
                    return Err(format!("skiplist: {cur} linked above its height at {l}"));
                }
                keys.push(cur);
                cur = words[self.link(cur as usize, l)];
            }
            if l == 0 {
                below = Some(keys.clone());
            }
            let base = below.as_deref().unwrap_or(&[]);
            for k in &keys {
                if base.binary_search(k).is_err() {
                    return Err(format!("skiplist: {k} at level {l} but not at level 0"));
                }
            }
            // Every key of level 0 tall enough must appear at this level too.
            let tall = base.iter().filter(|&&k| self.height(k) > l).count();
            if tall != keys.len() {
                return Err(format!("skiplist: level {l} misses a tall node"));
            }
        }
        Ok(below.unwrap_or_default())
    }
}
