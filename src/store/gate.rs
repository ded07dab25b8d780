//! The transaction gate: LMDB lets a process change its map size only while
//! it has no transaction open, so every transaction of a store passes this
//! gate, and growing the map waits for the gate to empty.
//!
//! A thread that already holds a pass may enter again while a map change
//! waits: the change cannot happen before that thread's first pass ends
//! anyway, so making it wait would only stall it until the change gives up
//! (a deadlock bounded by the patience). And a thread that holds a pass
//! and asks for a map change itself is refused at once: it would wait for
//! itself.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, ThreadId};
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
    /// Of those, how many each thread began (a pass counts for the thread
    /// that entered, wherever it is dropped).
    held: HashMap<ThreadId, usize>,
    /// A map change is waiting or under way: no new transaction starts,
    /// except on a thread that already holds a pass.
    exclusive: bool,
}

impl State {
    fn held_here(&self) -> usize {
        self.held.get(&thread::current().id()).copied().unwrap_or(0)
    }
}

/// Proof that a transaction may be open; leaving the gate on drop.
pub(crate) struct Pass<'g> {
    gate: &'g Gate,
    thread: ThreadId,
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut s = self.gate.lock();
        s.open -= 1;
        if let Some(n) = s.held.get_mut(&self.thread) {
            *n -= 1;
            if *n == 0 {
                s.held.remove(&self.thread);
            }
        }
        self.gate.changed.notify_all();
    }
}

/// Why a map change did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Blocked {
    /// Transactions open in this process when it gave up.
    pub open: usize,
    /// Of those, the ones the asking thread itself holds (then it gave up
    /// at once).
    pub held_here: usize,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is counters that every holder leaves consistent, so a
        // panic elsewhere while holding the lock does not corrupt it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until no map change is under way (unless this thread already
    /// holds a pass), then counts a transaction in.
    pub(crate) fn enter(&self) -> Pass<'_> {
        let mut s = self.lock();
        while s.exclusive && s.held_here() == 0 {
            s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.open += 1;
        let thread = thread::current().id();
        *s.held.entry(thread).or_insert(0) += 1;
        Pass { gate: self, thread }
    }

    /// Passes the calling thread holds.
    #[cfg(test)]
    pub(crate) fn held_here(&self) -> usize {
        self.lock().held_here()
    }

    /// Runs `f` with no transaction open in this process: new transactions
    /// wait, and this waits up to `patience` for open ones to end. Refused
    /// at once if the calling thread holds a pass itself.
    pub(crate) fn exclusive<R>(
        &self,
        patience: Duration,
        f: impl FnOnce() -> R,
    ) -> Result<R, Blocked> {
        let deadline = Instant::now() + patience;
        let mut s = self.lock();
        loop {
            let held_here = s.held_here();
            if held_here > 0 {
                return Err(Blocked {
                    open: s.open,
                    held_here,
                });
            }
            if !s.exclusive {
                break;
            }
            s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.exclusive = true;
        while s.open > 0 {
            let now = Instant::now();
            if now >= deadline {
                let open = s.open;
                s.exclusive = false;
                self.changed.notify_all();
                return Err(Blocked { open, held_here: 0 });
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        // `f` runs under the state lock: no pass can be entered meanwhile,
        // re-entering threads included (they hold none: `open` is 0).
        let r = f();
        s.exclusive = false;
        self.changed.notify_all();
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_thread_holding_a_pass_enters_again_while_a_change_waits() {
        let gate = Arc::new(Gate::default());
        let first = gate.enter();
        let waiter = {
            let gate = gate.clone();
            thread::spawn(move || gate.exclusive(Duration::from_secs(30), || 7))
        };
        // Wait until the change is waiting for this thread's pass.
        while !gate.lock().exclusive {
            thread::yield_now();
        }
        // A second pass on this thread does not wait for the change...
        let second = gate.enter();
        assert_eq!(gate.held_here(), 2);
        // ...and the change happens once both end.
        drop(first);
        drop(second);
        assert_eq!(waiter.join().unwrap(), Ok(7));
        assert_eq!(gate.lock().open, 0);
        assert!(gate.lock().held.is_empty());
    }

    #[test]
    fn a_change_asked_for_by_a_thread_holding_a_pass_is_refused_at_once() {
        let gate = Gate::default();
        let pass = gate.enter();
        let other = thread::scope(|s| s.spawn(|| gate.enter()).join().unwrap());
        assert_eq!(
            gate.exclusive(Duration::from_secs(3600), || ()),
            Err(Blocked {
                open: 2,
                held_here: 1
            })
        );
        drop(pass);
        // A pass entered elsewhere and dropped here counts for its thread.
        drop(other);
        assert_eq!(gate.exclusive(Duration::ZERO, || 1), Ok(1));
    }
}
