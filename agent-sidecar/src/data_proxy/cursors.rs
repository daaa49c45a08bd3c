//! Scroll and point-in-time ids this proxy handed out. A continuation
//! names no index, so it is served only for an id whose opening request
//! passed the allowlist here: an id from anywhere else (another agent's
//! scroll over indices this one may not read) is refused.

use std::{
    collections::{HashSet, VecDeque},
    sync::Mutex,
};

/// Ids remembered at most; the oldest are forgotten first (a forgotten
/// scroll is refused and the agent opens a new one).
const MAX_CURSORS: usize = 4096;

#[derive(Default)]
pub struct Cursors {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Cursors {
    pub fn remember(&self, id: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.ids.insert(id.to_owned()) {
            g.order.push_back(id.to_owned());
        }
        while g.order.len() > MAX_CURSORS {
            if let Some(old) = g.order.pop_front() {
                g.ids.remove(&old);
            }
        }
    }

    pub fn issued(&self, id: &str) -> bool {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.ids.contains(id)
    }

    pub fn forget(&self, id: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.ids.remove(id) {
            g.order.retain(|o| o != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_remembered_ids_are_issued_and_the_oldest_are_forgotten() {
        let c = Cursors::default();
        assert!(!c.issued("a"));
        c.remember("a");
        assert!(c.issued("a"));
        c.forget("a");
        assert!(!c.issued("a"));
        for i in 0..=MAX_CURSORS {
            c.remember(&i.to_string());
        }
        assert!(!c.issued("0"));
        assert!(c.issued(&MAX_CURSORS.to_string()));
    }
}
