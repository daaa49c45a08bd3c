use super::*;

fn limits(max_items: usize, max_bytes: usize, max_conversations: usize) -> HistoryLimits {
    HistoryLimits {
        max_items,
        max_bytes,
        max_conversations,
    }
}

fn texts(c: &Conversation) -> Vec<&str> {
    c.items.iter().map(|i| i.text.as_str()).collect()
}

#[test]
fn history_drops_oldest_turns_beyond_the_item_bound() {
    let l = limits(4, 1 << 20, 10);
    let mut c = Conversation::default();
    for i in 0..3 {
        c.push_turn(&format!("q{i}"), &format!("a{i}"), &l);
    }
    assert_eq!(texts(&c), ["q1", "a1", "q2", "a2"]);
    assert_eq!(c.items[0].role, Role::User);
}

#[test]
fn history_drops_oldest_turns_beyond_the_byte_bound_and_never_starts_with_a_reply() {
    // 10 bytes: "q0"+"aaaaaa" fits; adding "q1"+"a1" (4) would make 12.
    let l = limits(100, 10, 10);
    let mut c = Conversation::default();
    c.push_turn("q0", "aaaaaa", &l);
    assert_eq!(c.bytes(), 8);
    c.push_turn("q1", "a1", &l);
    assert_eq!(texts(&c), ["q1", "a1"]);
    // An odd bound cuts after a user message: the orphaned reply goes too.
    let l = limits(3, 1 << 20, 10);
    let mut c = Conversation::default();
    c.push_turn("q0", "a0", &l);
    c.push_turn("q1", "a1", &l);
    assert_eq!(texts(&c), ["q1", "a1"]);
}

#[test]
fn a_turn_larger_than_the_byte_bound_leaves_no_history() {
    let l = limits(100, 4, 10);
    let mut c = Conversation::default();
    c.push_turn("question", "answer", &l);
    assert!(c.items.is_empty());
}

#[test]
fn history_modes_parse_and_refuse_unknown_values() {
    for m in ["auto", "server", "sidecar", "off"] {
        assert_eq!(m.parse::<HistoryMode>().unwrap().as_str(), m);
    }
    let e = "memory".parse::<HistoryMode>().unwrap_err();
    assert!(e.contains("auto, server, sidecar or off"), "{e}");
}

#[test]
fn unsupported_is_final_for_the_run() {
    let s = ServerSupport::default();
    assert_eq!(s.get(), Support::Unknown);
    assert!(s.set(Support::Supported));
    assert!(!s.set(Support::Supported));
    assert!(s.set(Support::Unsupported));
    assert!(!s.set(Support::Supported));
    assert_eq!(s.get(), Support::Unsupported);
}

#[test]
fn store_round_trips_a_conversation_across_instances() {
    let dir = tempfile::tempdir().unwrap();
    let l = HistoryLimits::default();
    let store = ConversationStore::new(dir.path().join("conversations"), l);
    let mut c = Conversation {
        last_response_id: Some("resp_1".into()),
        ..Conversation::default()
    };
    c.push_turn("my cat is Tom", "noted", &l);
    store.save("slack:T1:D1", &c).unwrap();
    // A new store on the same directory: what a restarted sidecar opens.
    let again = ConversationStore::new(dir.path().join("conversations"), l);
    assert_eq!(again.load("slack:T1:D1"), c);
    assert_eq!(again.load("slack:T1:D2"), Conversation::default());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("conversations"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn a_corrupt_file_starts_that_conversation_fresh_and_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let store = ConversationStore::new(dir.path().to_owned(), HistoryLimits::default());
    let path = store.path_for("cli");
    std::fs::write(
        &path,
        b"{\"v\":1,\"conversation\":\"cli\",\"items\":[{\"role\":",
    )
    .unwrap();
    assert!(matches!(
        store.try_load("cli"),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(store.load("cli"), Conversation::default());
    assert!(!path.exists());
    assert!(path.with_extension("corrupt").exists());
    // It can be saved again afterwards.
    let mut c = Conversation::default();
    c.push_turn("hi", "hello", store.limits());
    store.save("cli", &c).unwrap();
    assert_eq!(store.load("cli"), c);
}

#[test]
fn a_file_of_another_conversation_or_version_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let store = ConversationStore::new(dir.path().to_owned(), HistoryLimits::default());
    std::fs::write(
        store.path_for("a"),
        br#"{"v":1,"conversation":"b","items":[]}"#,
    )
    .unwrap();
    assert!(matches!(
        store.try_load("a"),
        Err(StoreError::Corrupt { .. })
    ));
    std::fs::write(
        store.path_for("c"),
        br#"{"v":9,"conversation":"c","items":[]}"#,
    )
    .unwrap();
    assert_eq!(store.load("c"), Conversation::default());
}

#[test]
fn loading_applies_lowered_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let wide = ConversationStore::new(dir.path().to_owned(), HistoryLimits::default());
    let mut c = Conversation::default();
    for i in 0..5 {
        c.push_turn(&format!("q{i}"), &format!("a{i}"), wide.limits());
    }
    wide.save("x", &c).unwrap();
    let narrow = ConversationStore::new(dir.path().to_owned(), limits(2, 1 << 20, 10));
    assert_eq!(texts(&narrow.load("x")), ["q4", "a4"]);
}

#[test]
fn the_least_recently_saved_conversations_are_forgotten_beyond_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let store = ConversationStore::new(dir.path().to_owned(), limits(10, 1 << 20, 2));
    let mut c = Conversation::default();
    c.push_turn("q", "a", store.limits());
    for (i, name) in ["one", "two", "three"].iter().enumerate() {
        store.save(name, &c).unwrap();
        // Distinct modification times, oldest first.
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64);
        std::fs::File::options()
            .write(true)
            .open(store.path_for(name))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
    store.save("four", &c).unwrap();
    assert_eq!(store.load("one"), Conversation::default());
    assert_eq!(store.load("two"), Conversation::default());
    assert_eq!(store.load("three"), c);
    assert_eq!(store.load("four"), c);
}
