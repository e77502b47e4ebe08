//! Locking a [`Mutex`] despite poison.
//!
//! WHY poisoning is ignored: a poisoned mutex only says that a thread panicked while
//! holding it. pvusb's critical sections leave their data consistent between
//! statements (or losing it is no worse than the panic itself), and a daemon must
//! still answer other guests, close controllers and shut down after one thread's
//! bug; turning the poison into a panic in every later caller would spread one
//! failure to all of them. Where a call site's data needs a reason of its own, the
//! call site says so.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, taking the guard even if another thread panicked while holding it.
pub fn lock_unpoisoned<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_mutex_still_locks_with_its_data() {
        let m = Mutex::new(1);
        let _ = std::panic::catch_unwind(|| {
            let mut g = m.lock().unwrap();
            *g = 2;
            panic!("poison it");
        });
        assert!(m.is_poisoned());
        assert_eq!(*lock_unpoisoned(&m), 2);
    }
}
