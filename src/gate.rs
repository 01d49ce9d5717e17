//! A counting gate that hands free slots to the waiter with the highest priority (FIFO
//! among equals). The pipeline gives each user's next event the number of events that
//! user still has: the longest chain goes first, so a batch takes about
//! max(longest chain, requests ÷ slots) round trips (highest-level-first scheduling).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::Mutex;

use tokio::sync::oneshot;

#[derive(Debug)]
pub struct PriorityGate {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    free: usize,
    next_ticket: u64,
    waiting: BinaryHeap<Waiter>,
}

#[derive(Debug)]
struct Waiter {
    priority: usize,
    ticket: Reverse<u64>,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.priority, self.ticket).cmp(&(other.priority, other.ticket))
    }
}

/// A held slot; dropping it hands the slot to the best waiter.
#[derive(Debug)]
pub struct Slot<'a> {
    gate: &'a PriorityGate,
}

impl PriorityGate {
    pub fn new(slots: usize) -> Self {
        PriorityGate {
            state: Mutex::new(State {
                free: slots.max(1),
                next_ticket: 0,
                waiting: BinaryHeap::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn acquire(&self, priority: usize) -> Slot<'_> {
        let woken = {
            let mut state = self.state();
            if state.free > 0 && state.waiting.is_empty() {
                state.free -= 1;
                return Slot { gate: self };
            }
            let (wake, woken) = oneshot::channel();
            let ticket = Reverse(state.next_ticket);
            state.next_ticket += 1;
            state.waiting.push(Waiter {
                priority,
                ticket,
                wake,
            });
            woken
        };
        // The releasing slot is handed over directly; a closed channel cannot happen
        // while the gate lives, since the gate owns every sender.
        let _ = woken.await;
        Slot { gate: self }
    }

    fn release(&self) {
        let mut state = self.state();
        while let Some(waiter) = state.waiting.pop() {
            if waiter.wake.send(()).is_ok() {
                return;
            }
            // That waiter gave up: offer the slot to the next one.
        }
        state.free += 1;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.gate.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn highest_priority_waiter_goes_first() {
        let gate = Arc::new(PriorityGate::new(1));
        let held = gate.acquire(0).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, priority) in [("low", 1), ("high", 5), ("mid", 3), ("mid-later", 3)] {
            let (gate, order) = (Arc::clone(&gate), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let _slot = gate.acquire(priority).await;
                order.lock().unwrap().push(name);
            }));
            tokio::task::yield_now().await;
        }
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["high", "mid", "mid-later", "low"]);
    }

    #[tokio::test]
    async fn never_more_slots_than_given() {
        let gate = PriorityGate::new(2);
        let a = gate.acquire(0).await;
        let _b = gate.acquire(0).await;
        let third = gate.acquire(9);
        tokio::pin!(third);
        assert!(futures_util::poll!(&mut third).is_pending());
        drop(a);
        let _c = third.await;
        assert_eq!(gate.state().free, 0);
    }
}
