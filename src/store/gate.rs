//! The transaction gate: LMDB lets a process change its map size only while
//! it has no transaction open, so every transaction of a store passes this
//! gate, and growing the map waits for the gate to empty.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

#[derive(Default)]
pub(crate) struct Gate {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Transactions open in this process.
    open: usize,
    /// A map change is waiting or under way: no new transaction starts.
    exclusive: bool,
}

/// Proof that a transaction may be open; leaving the gate on drop.
pub(crate) struct Pass<'g>(&'g Gate);

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.open -= 1;
        self.0.changed.notify_all();
    }
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two counters that every holder leaves consistent, so
        // a panic elsewhere while holding the lock does not corrupt it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until no map change is under way, then counts a transaction in.
    pub(crate) fn enter(&self) -> Pass<'_> {
        let mut s = self.lock();
        while s.exclusive {
            s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.open += 1;
        Pass(self)
    }

    /// Runs `f` with no transaction open in this process: new transactions
    /// wait, and this waits up to `patience` for open ones to end. Returns
    /// `Err(open)` if they did not.
    pub(crate) fn exclusive<R>(
        &self,
        patience: Duration,
        f: impl FnOnce() -> R,
    ) -> Result<R, usize> {
        let deadline = Instant::now() + patience;
        let mut s = self.lock();
        while s.exclusive {
            s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.exclusive = true;
        while s.open > 0 {
            let now = Instant::now();
            if now >= deadline {
                let open = s.open;
                s.exclusive = false;
                self.changed.notify_all();
                return Err(open);
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let r = f();
        s.exclusive = false;
        self.changed.notify_all();
        Ok(r)
    }
}
