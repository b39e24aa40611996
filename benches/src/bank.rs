//! The bank workload: accounts, transfers between two random accounts, and audits that read
//! every account and check the total (TinySTM's `bank`).

use crate::rng::Rng;
use std::sync::Mutex;
use stm_core::{TVar, atomically};

/// A bank of `i64` accounts that several threads transfer between.
pub trait Bank: Sync {
    /// What synchronises it ("stm", "mutex-per-account", "global-mutex").
    fn name(&self) -> &'static str;
    /// Number of accounts.
    fn len(&self) -> usize;
    /// Whether the bank has no account.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Moves `amount` from account `from` to account `to` (indices below `len()`; equal
    /// indices are a no-op).
    fn transfer(&self, from: usize, to: usize, amount: i64);
    /// The sum of every account, read atomically.
    fn total(&self) -> i64;
}

/// Accounts as `TVar`s; a transfer and an audit are each one transaction.
pub struct StmBank {
    accounts: Box<[TVar<i64>]>,
}

impl StmBank {
    /// `n` accounts holding `initial` each.
    pub fn new(n: usize, initial: i64) -> Self {
        StmBank {
            accounts: (0..n).map(|_| TVar::new(initial)).collect(),
        }
    }
}

impl Bank for StmBank {
    fn name(&self) -> &'static str {
        "stm"
    }
    fn len(&self) -> usize {
        self.accounts.len()
    }
    fn transfer(&self, from: usize, to: usize, amount: i64) {
        if from == to {
            return;
        }
        let (a, b) = (&self.accounts[from], &self.accounts[to]);
        atomically(|tx| {
            tx.modify(a, |x| x - amount)?;
            tx.modify(b, |x| x + amount)?;
            Ok(())
        });
    }
    fn total(&self) -> i64 {
        atomically(|tx| {
            let mut sum = 0;
            for a in self.accounts.iter() {
                sum += tx.read(a)?;
            }
            Ok(sum)
        })
    }
}

/// One `Mutex` per account; a transfer locks its two accounts in index order, an audit locks
/// them all in index order.
pub struct MutexPerAccount {
    accounts: Box<[Mutex<i64>]>,
}

impl MutexPerAccount {
    /// `n` accounts holding `initial` each.
    pub fn new(n: usize, initial: i64) -> Self {
        MutexPerAccount {
            accounts: (0..n).map(|_| Mutex::new(initial)).collect(),
        }
    }
}

impl Bank for MutexPerAccount {
    fn name(&self) -> &'static str {
        "mutex-per-account"
    }
    fn len(&self) -> usize {
        self.accounts.len()
    }
    fn transfer(&self, from: usize, to: usize, amount: i64) {
        if from == to {
            return;
        }
        let (lo, hi) = (from.min(to), from.max(to));
        let mut l = self.accounts[lo].lock().unwrap_or_else(|e| e.into_inner());
        let mut h = self.accounts[hi].lock().unwrap_or_else(|e| e.into_inner());
        let (f, t) = if from == lo {
            (&mut *l, &mut *h)
        } else {
            (&mut *h, &mut *l)
        };
        *f -= amount;
        *t += amount;
    }
    fn total(&self) -> i64 {
        let guards: Vec<_> = self
            .accounts
            .iter()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
            .collect();
        guards.iter().map(|g| **g).sum()
    }
}

/// Every account behind one `Mutex`.
pub struct GlobalMutex {
    accounts: Mutex<Vec<i64>>,
}

impl GlobalMutex {
    /// `n` accounts holding `initial` each.
    pub fn new(n: usize, initial: i64) -> Self {
        GlobalMutex {
            accounts: Mutex::new(vec![initial; n]),
        }
    }
}

impl Bank for GlobalMutex {
    fn name(&self) -> &'static str {
        "global-mutex"
    }
    fn len(&self) -> usize {
        self.accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
    fn transfer(&self, from: usize, to: usize, amount: i64) {
        if from == to {
            return;
        }
        let mut a = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        a[from] -= amount;
        a[to] += amount;
    }
    fn total(&self) -> i64 {
        self.accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .sum()
    }
}

/// The bank workload's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BankWorkload {
    /// Number of accounts.
    pub accounts: usize,
    /// Money in each account at the start.
    pub initial: i64,
    /// Percentage of operations that audit (read every account and check the total).
    pub audit_percent: u32,
}

impl Default for BankWorkload {
    fn default() -> Self {
        BankWorkload {
            accounts: 1024,
            initial: 1000,
            audit_percent: 20,
        }
    }
}

impl BankWorkload {
    /// The total every audit must see.
    pub fn expected_total(&self) -> i64 {
        self.initial * self.accounts as i64
    }

    /// Every bank the suites compare, with this workload's accounts.
    pub fn all_banks(&self) -> Vec<Box<dyn Bank + Send>> {
        vec![
            Box::new(StmBank::new(self.accounts, self.initial)),
            Box::new(MutexPerAccount::new(self.accounts, self.initial)),
            Box::new(GlobalMutex::new(self.accounts, self.initial)),
        ]
    }

    /// One operation: an audit (returns whether its total was right) or a transfer of 1..=10
    /// between two random accounts (returns `true`).
    #[inline]
    pub fn op(&self, bank: &dyn Bank, rng: &mut Rng) -> bool {
        let n = bank.len() as u32;
        if n == 0 {
            return true;
        }
        if rng.below(100) < self.audit_percent {
            bank.total() == self.expected_total()
        } else {
            let from = rng.below(n) as usize;
            let to = rng.below(n) as usize;
            bank.transfer(from, to, 1 + i64::from(rng.below(10)));
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::run_threads;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn audits_always_see_the_total() {
        let w = BankWorkload {
            accounts: 64,
            initial: 100,
            audit_percent: 20,
        };
        for bank in w.all_banks() {
            let bad = AtomicU64::new(0);
            run_threads(2, 2_000, 3, |_, rng| {
                if !w.op(&*bank, rng) {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            });
            assert_eq!(bad.load(Ordering::Relaxed), 0, "{}", bank.name());
            assert_eq!(bank.total(), w.expected_total(), "{}", bank.name());
            assert_eq!(bank.len(), 64);
            assert!(!bank.is_empty());
        }
    }

    #[test]
    fn transfer_moves_money_and_self_transfer_is_a_no_op() {
        for bank in BankWorkload::default().all_banks() {
            bank.transfer(3, 5, 7);
            bank.transfer(5, 3, 2);
            bank.transfer(4, 4, 9);
            assert_eq!(bank.total(), 1024 * 1000, "{}", bank.name());
        }
        let empty = StmBank::new(0, 0);
        assert!(empty.is_empty());
        assert!(BankWorkload::default().op(&empty, &mut Rng::new(1)));
    }
}
