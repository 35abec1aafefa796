//! The one lock policy of NMI, MIC and the mirrors: a poisoned std lock is used anyway.
//!
//! A std `Mutex` or `RwLock` is poisoned when a thread panics while holding it. Failing on that
//! (`.lock().expect(..)`) would turn one panic into a panic of every later request or pass that
//! touches the same lock: a node agent that refuses every pod, or a controller that stops
//! assigning, for a fault that already happened and was already logged by the panicking thread.
//! Recovering is safe here because poisoning carries no information about these structures:
//! each one is left consistent at every point a panic or an `.await` can interrupt it. The
//! guarded values are plain data (maps of facts, token caches, token buckets, time stamps,
//! counters) changed by single calls or plain assignments (`insert`, `remove`, `clear`, `x = y`),
//! with nothing that can panic between two writes that belong together; and no guard is held
//! across an `.await` (std guards are not `Send`, and the futures NMI and MIC spawn must be).
//! A poisoned lock therefore holds what some whole update left, as an unpoisoned one does.
//!
//! A structure that did need several writes to stay consistent would have to fail instead; it
//! should not use these helpers.
//!
//! It lives in `mirror` because that is the lowest crate NMI and MIC both depend on, and the
//! mirrors were the first to follow this policy; three functions do not warrant a crate of
//! their own.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`, poisoned or not (see the module's docs).
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-locks `l`, poisoned or not (see the module's docs).
pub fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-locks `l`, poisoned or not (see the module's docs).
pub fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, panic::AssertUnwindSafe};

    use super::*;

    /// Panics while holding a guard taken by `hold`, as a request handler might.
    fn panic_holding<G>(hold: impl FnOnce() -> G) {
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let _guard = hold();
            panic!("a handler failed while holding the lock");
        }));
        assert!(result.is_err());
    }

    #[test]
    fn a_poisoned_mutex_still_gives_its_last_written_value() {
        let m = Mutex::new(HashMap::from([("a", 1)]));
        panic_holding(|| {
            let mut g = lock(&m);
            g.insert("b", 2);
            g
        });
        assert!(m.is_poisoned());
        let mut g = lock(&m);
        assert_eq!(*g, HashMap::from([("a", 1), ("b", 2)]));
        g.insert("c", 3);
        assert_eq!(g.len(), 3);
    }

    #[test]
    fn a_poisoned_rwlock_can_still_be_read_and_written() {
        let l = RwLock::new(vec![1]);
        panic_holding(|| {
            let mut g = write(&l);
            g.push(2);
            g
        });
        assert!(l.is_poisoned());
        assert_eq!(*read(&l), [1, 2]);
        write(&l).push(3);
        assert_eq!(*read(&l), [1, 2, 3]);
        // A reader's panic changes nothing either.
        panic_holding(|| read(&l));
        assert_eq!(read(&l).len(), 3);
    }
}
