//! Which notices an agent has had delivered. A sidecar resends a notice
//! until it is acknowledged, and an acknowledgement can be lost (the
//! controller dies between posting and acking, or two resends of the same
//! outbox cross): the runtime keeps the ids of the last delivered notices
//! with the agent's record, so a resend is acknowledged, not posted again,
//! also by a restarted controller or the next leader.

/// Notice ids kept per agent; the oldest go first. A sidecar resends only
/// what is still in its outbox, so a few hundred recent ids cover it.
pub const REMEMBERED: usize = 256;

/// Add `notice_id` to `delivered` (most recent last), keeping at most
/// [`REMEMBERED`]. Returns `false` when it was there already.
pub fn remember(delivered: &mut Vec<String>, notice_id: &str) -> bool {
    if delivered.iter().any(|d| d == notice_id) {
        return false;
    }
    delivered.push(notice_id.to_owned());
    if delivered.len() > REMEMBERED {
        let extra = delivered.len() - REMEMBERED;
        delivered.drain(..extra);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_kept_once_and_the_oldest_go_first() {
        let mut d = Vec::new();
        assert!(remember(&mut d, "n-1"));
        assert!(!remember(&mut d, "n-1"));
        for i in 0..REMEMBERED {
            remember(&mut d, &format!("m-{i}"));
        }
        assert_eq!(d.len(), REMEMBERED);
        assert!(!d.contains(&"n-1".to_owned()));
        assert_eq!(d.last().map(String::as_str), Some("m-255"));
    }
}
