//! Sorted singly linked list: word `k` is the link out of node `k`, word `range` the head.

use super::{NIL, Read, Structure, Write};
use stm_core::Abort;

/// A sorted linked list of keys (TinySTM's `intset` "linked list").
#[derive(Debug, Clone, Copy)]
pub struct List {
    head: usize,
}

impl List {
    /// The node before the first key `>= k` (the head if none) and that key's node (or NIL).
    #[inline]
    fn find<M: Read>(&self, m: &M, k: u32) -> Result<(usize, u32), Abort> {
        let mut prev = self.head;
        let mut cur = m.get(prev)?;
        while cur != NIL && cur < k {
            prev = cur as usize;
            cur = m.get(prev)?;
        }
        Ok((prev, cur))
    }
}

impl Structure for List {
    const NAME: &'static str = "list";

    fn new(range: u32) -> Self {
        List {
            head: range as usize,
        }
    }

    fn empty(&self) -> Vec<u32> {
        vec![NIL; self.head + 1]
    }

    fn contains<M: Read>(&self, m: &M, k: u32) -> Result<bool, Abort> {
        Ok(self.find(m, k)?.1 == k)
    }

    fn insert<M: Write>(&self, m: &mut M, k: u32) -> Result<bool, Abort> {
        let (prev, cur) = self.find(m, k)?;
        if cur == k {
            return Ok(false);
        }
        m.set(k as usize, cur)?;
        m.set(prev, k)?;
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
        let mut cur = words[self.head];
        while cur != NIL {
            if cur as usize >= self.head {
                return Err(format!("list: link to {cur}, outside the range"));
            }
            if out.last().is_some_and(|&l| l >= cur) {
                return Err(format!("list: {cur} after {:?}", out.last()));
            }
            out.push(cur);
            cur = words[cur as usize];
        }
        Ok(out)
    }
}
