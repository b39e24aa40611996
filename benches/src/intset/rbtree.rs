//! Red-black tree: node `k` owns words `4k .. 4k + 4` (left, right, parent, colour); word
//! `4 * range` is the root. No sentinel node: a shared sentinel whose parent every delete
//! writes would make all deletes conflict, so NIL is "no node" and is black.

use super::{NIL, Read, Structure, Write};
use stm_core::Abort;

const LEFT: usize = 0;
const RIGHT: usize = 1;
const PARENT: usize = 2;
const COLOR: usize = 3;
const RED: u32 = 0;
const BLACK: u32 = 1;

/// A red-black tree of keys (TinySTM's `intset` "red-black tree"), CLRS insert and delete with
/// the fix-ups, written without a sentinel (the delete fix-up carries x's parent).
#[derive(Debug, Clone, Copy)]
pub struct RbTree {
    root: usize,
}

/// The tree's word accessors over one memory `m`.
struct T<'a, M> {
    m: &'a mut M,
    root: usize,
}

impl<M: Read> T<'_, M> {
    #[inline]
    fn f(&self, n: u32, field: usize) -> Result<u32, Abort> {
        self.m.get(n as usize * 4 + field)
    }
    #[inline]
    fn left(&self, n: u32) -> Result<u32, Abort> {
        self.f(n, LEFT)
    }
    #[inline]
    fn right(&self, n: u32) -> Result<u32, Abort> {
        self.f(n, RIGHT)
    }
    #[inline]
    fn parent(&self, n: u32) -> Result<u32, Abort> {
        self.f(n, PARENT)
    }
    /// NIL is black.
    #[inline]
    fn color(&self, n: u32) -> Result<u32, Abort> {
        if n == NIL {
            Ok(BLACK)
        } else {
            self.f(n, COLOR)
        }
    }
    #[inline]
    fn root(&self) -> Result<u32, Abort> {
        self.m.get(self.root)
    }
}

impl<M: Write> T<'_, M> {
    #[inline]
    fn set(&mut self, n: u32, field: usize, v: u32) -> Result<(), Abort> {
        self.m.set(n as usize * 4 + field, v)
    }
    #[inline]
    fn set_root(&mut self, v: u32) -> Result<(), Abort> {
        self.m.set(self.root, v)
    }
    /// Writes a colour only when it changes (a write is a conflict for every reader of it).
    #[inline]
    fn paint(&mut self, n: u32, c: u32) -> Result<(), Abort> {
        if n != NIL && self.f(n, COLOR)? != c {
            self.set(n, COLOR, c)?;
        }
        Ok(())
    }

    /// Makes `v` take `u`'s place under `u`'s parent.
    fn replace_child(&mut self, u: u32, v: u32) -> Result<(), Abort> {
        let up = self.parent(u)?;
        if up == NIL {
            self.set_root(v)?;
        } else if self.left(up)? == u {
            self.set(up, LEFT, v)?;
        } else {
            self.set(up, RIGHT, v)?;
        }
        if v != NIL {
            self.set(v, PARENT, up)?;
        }
        Ok(())
    }

    /// Rotates `x` down to the `dir` side (`LEFT`: its right child comes up).
    fn rotate(&mut self, x: u32, dir: usize) -> Result<(), Abort> {
        let other = dir ^ 1;
        let y = self.f(x, other)?;
        let inner = self.f(y, dir)?;
        self.set(x, other, inner)?;
        if inner != NIL {
            self.set(inner, PARENT, x)?;
        }
        self.replace_child(x, y)?;
        self.set(y, dir, x)?;
        self.set(x, PARENT, y)
    }

    fn insert_fixup(&mut self, mut z: u32) -> Result<(), Abort> {
        loop {
            let p = self.parent(z)?;
            if p == NIL || self.color(p)? != RED {
                break;
            }
            // p is red, so it is not the root: g exists.
            let g = self.parent(p)?;
            let side = if self.left(g)? == p { LEFT } else { RIGHT };
            let other = side ^ 1;
            let u = self.f(g, other)?;
            if self.color(u)? == RED {
                self.paint(p, BLACK)?;
                self.paint(u, BLACK)?;
                self.paint(g, RED)?;
                z = g;
                continue;
            }
            let mut p = p;
            if self.f(p, other)? == z {
                z = p;
                self.rotate(z, side)?;
                p = self.parent(z)?;
            }
            self.paint(p, BLACK)?;
            self.paint(g, RED)?;
            self.rotate(g, other)?;
        }
        let r = self.root()?;
        self.paint(r, BLACK)
    }

    fn delete_fixup(&mut self, mut x: u32, mut xp: u32) -> Result<(), Abort> {
        while xp != NIL && self.color(x)? == BLACK {
            let side = if self.left(xp)? == x { LEFT } else { RIGHT };
            let other = side ^ 1;
            let mut w = self.f(xp, other)?;
            if self.color(w)? == RED {
                self.paint(w, BLACK)?;
                self.paint(xp, RED)?;
                self.rotate(xp, side)?;
                w = self.f(xp, other)?;
            }
            let wn = self.f(w, side)?;
            let wf = self.f(w, other)?;
            if self.color(wn)? == BLACK && self.color(wf)? == BLACK {
                self.paint(w, RED)?;
                x = xp;
                xp = self.parent(x)?;
            } else {
                if self.color(wf)? == BLACK {
                    self.paint(wn, BLACK)?;
                    self.paint(w, RED)?;
                    self.rotate(w, other)?;
                    w = self.f(xp, other)?;
                }
                let c = self.color(xp)?;
                self.paint(w, c)?;
                self.paint(xp, BLACK)?;
                let wf = self.f(w, other)?;
                self.paint(wf, BLACK)?;
                self.rotate(xp, side)?;
                x = self.root()?;
                xp = NIL;
            }
        }
        self.paint(x, BLACK)
    }
}

impl RbTree {
    /// The node holding `k`, or the last node visited (its parent-to-be) with `found == false`.
    #[inline]
    fn find<M: Read>(&self, m: &M, k: u32) -> Result<(u32, bool), Abort> {
        let mut parent = NIL;
        let mut x = m.get(self.root)?;
        while x != NIL {
            if x == k {
                return Ok((x, true));
            }
            parent = x;
            x = m.get(x as usize * 4 + if k < x { LEFT } else { RIGHT })?;
        }
        Ok((parent, false))
    }
}

impl Structure for RbTree {
    const NAME: &'static str = "rbtree";

    fn new(range: u32) -> Self {
        RbTree {
            root: range as usize * 4,
        }
    }

    fn empty(&self) -> Vec<u32> {
        let mut w = vec![NIL; self.root + 1];
        for n in 0..self.root / 4 {
            w[n * 4 + COLOR] = BLACK;
        }
        w
    }

    fn contains<M: Read>(&self, m: &M, k: u32) -> Result<bool, Abort> {
        Ok(self.find(m, k)?.1)
    }

    fn insert<M: Write>(&self, m: &mut M, k: u32) -> Result<bool, Abort> {
        let (y, found) = self.find(m, k)?;
        if found {
            return Ok(false);
        }
        let mut t = T { m, root: self.root };
        t.set(k, LEFT, NIL)?;
        t.set(k, RIGHT, NIL)?;
        t.set(k, PARENT, y)?;
        t.set(k, COLOR, RED)?;
        if y == NIL {
            t.set_root(k)?;
        } else {
            t.set(y, if k < y { LEFT } else { RIGHT }, k)?;
        }
        t.insert_fixup(k)?;
        Ok(true)
    }

    fn remove<M: Write>(&self, m: &mut M, k: u32) -> Result<bool, Abort> {
        let (z, found) = self.find(m, k)?;
        if !found {
            return Ok(false);
        }
        let mut t = T { m, root: self.root };
        let zl = t.left(z)?;
        let zr = t.right(z)?;
        let removed_color;
        let (x, xp);
        if zl == NIL || zr == NIL {
            removed_color = t.color(z)?;
            x = if zl == NIL { zr } else { zl };
            xp = t.parent(z)?;
            t.replace_child(z, x)?;
        } else {
            // y: z's successor, the minimum of its right subtree; it takes z's place.
            let mut y = zr;
            loop {
                let l = t.left(y)?;
                if l == NIL {
                    break;
                }
                y = l;
            }
            removed_color = t.color(y)?;
            x = t.right(y)?;
            if y == zr {
                xp = y;
            } else {
                xp = t.parent(y)?;
                t.replace_child(y, x)?;
                t.set(y, RIGHT, zr)?;
                t.set(zr, PARENT, y)?;
            }
            t.replace_child(z, y)?;
            t.set(y, LEFT, zl)?;
            t.set(zl, PARENT, y)?;
            let zc = t.color(z)?;
            t.paint(y, zc)?;
        }
        if removed_color == BLACK {
            t.delete_fixup(x, xp)?;
        }
        Ok(true)
    }

    fn check(&self, words: &[u32]) -> Result<Vec<u32>, String> {
        let range = (self.root / 4) as u32;
        let get = |n: u32, f: usize| words[n as usize * 4 + f];
        let mut out = Vec::new();
        let root = words[self.root];
        if root != NIL && get(root, PARENT) != NIL {
            return Err("rbtree: the root has a parent".into());
        }
        if root != NIL && get(root, COLOR) != BLACK {
            return Err("rbtree: the root is red".into());
        }
        // Iterative in-order walk with black heights: (node, lo, hi, blacks above).
        let mut leaf_black: Option<u32> = None;
        let mut stack = vec![(root, 0u64, u64::from(range), 0u32, NIL)];
        while let Some((n, lo, hi, blacks, parent)) = stack.pop() {
            if out.len() > range as usize {
                return Err("rbtree: a cycle".into());
            }
            if n == NIL {
                match leaf_black {
                    None => leaf_black = Some(blacks),
                    Some(b) if b != blacks => {
                        return Err(format!("rbtree: black heights {b} and {blacks}"));
                    }
                    Some(_) => {}
                }
                continue;
            }
            if n >= range || u64::from(n) < lo || u64::from(n) >= hi {
                return Err(format!("rbtree: {n} out of order (bounds {lo}..{hi})"));
            }
            if get(n, PARENT) != parent {
                return Err(format!("rbtree: {n}'s parent link is wrong"));
            }
            let c = get(n, COLOR);
            if c == RED && parent != NIL && get(parent, COLOR) == RED {
                return Err(format!("rbtree: red {n} under a red parent"));
            }
            let b = blacks + u32::from(c == BLACK);
            out.push(n);
            stack.push((get(n, LEFT), lo, u64::from(n), b, n));
            stack.push((get(n, RIGHT), u64::from(n) + 1, hi, b, n));
        }
        out.sort_unstable();
        Ok(out)
    }
}
