// A panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use std::fs;

use clawswarm_proto::v1 as pb;

use clawswarm_proto::skill_bundle::read_dir;

use super::{Shelf, Skills};

fn bundle(name: &str, body: &str) -> pb::SkillBundle {
    pb::SkillBundle {
        name: name.into(),
        files: vec![
            pb::SkillFile {
                path: "SKILL.md".into(),
                content: format!("---\nname: {name}\ndescription: {body}\n---\n{body}")
                    .into_bytes(),
            },
            pb::SkillFile {
                path: "scripts/run.sh".into(),
                content: b"echo run".to_vec(),
            },
        ],
    }
}

fn request(op: pb::skill_request::Op) -> pb::SkillRequest {
    pb::SkillRequest {
        request_id: "r1".into(),
        op: Some(op),
    }
}

#[tokio::test]
async fn an_installed_skill_replaces_the_old_copy_whole_and_lists_as_library() {
    let dir = tempfile::tempdir().unwrap();
    let skills = Skills::new(Shelf::new(dir.path().join("skills")), None);
    let reply = skills
        .serve(request(pb::skill_request::Op::Install(bundle(
            "pipeline-status",
            "v1",
        ))))
        .await;
    assert_eq!(reply.request_id, "r1");
    assert_eq!(reply.error, "");
    assert_eq!(reply.skills.len(), 1);
    assert_eq!(reply.skills[0].source, "library");
    assert_eq!(reply.skills[0].description, "v1");

    let mut v2 = bundle("pipeline-status", "v2");
    v2.files.pop();
    skills
        .serve(request(pb::skill_request::Op::Install(v2)))
        .await;
    let root = dir.path().join("skills/pipeline-status");
    assert!(
        fs::read_to_string(root.join("SKILL.md"))
            .unwrap()
            .contains("v2")
    );
    assert!(
        !root.join("scripts/run.sh").exists(),
        "the old copy's files are gone"
    );
    assert_eq!(skills.installed(), vec!["pipeline-status".to_owned()]);
    let leftovers: Vec<_> = fs::read_dir(dir.path().join("skills")).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no staging directories left behind");
}

#[tokio::test]
async fn a_malformed_bundle_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let skills = Skills::new(Shelf::new(dir.path().join("skills")), None);
    let mut evil = bundle("x", "x");
    evil.files[1].path = "../../escape.sh".into();
    let reply = skills
        .serve(request(pb::skill_request::Op::Install(evil)))
        .await;
    assert!(reply.error.contains("not allowed"), "{}", reply.error);
    assert!(!dir.path().join("escape.sh").exists());
    assert!(skills.installed().is_empty());

    let reply = skills
        .serve(request(pb::skill_request::Op::Remove("absent".into())))
        .await;
    assert!(reply.error.contains("not installed"), "{}", reply.error);
    let reply = skills
        .serve(request(pb::skill_request::Op::Export("mine".into())))
        .await;
    assert!(
        reply.error.contains("no skills of its own"),
        "{}",
        reply.error
    );
    let reply = skills
        .serve(pb::SkillRequest {
            request_id: "r2".into(),
            op: None,
        })
        .await;
    assert!(reply.error.contains("no operation"), "{}", reply.error);
}

#[test]
fn reading_a_skill_directory_refuses_symlinks_and_keeps_subdirectories() {
    let dir = tempfile::tempdir().unwrap();
    let skill = dir.path().join("mine");
    fs::create_dir_all(skill.join("scripts")).unwrap();
    fs::write(skill.join("SKILL.md"), "---\ndescription: mine\n---\n").unwrap();
    fs::write(skill.join("scripts/a.sh"), "echo a").unwrap();
    fs::create_dir_all(skill.join(".openclaw")).unwrap();
    fs::write(skill.join(".openclaw/source-origin.json"), "{}").unwrap();
    let b = read_dir("mine", &skill).unwrap();
    let paths: Vec<&str> = b.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, vec!["SKILL.md", "scripts/a.sh"]);

    std::os::unix::fs::symlink("/etc/passwd", skill.join("passwd")).unwrap();
    let e = read_dir("mine", &skill).unwrap_err();
    assert!(e.contains("symlink"), "{e}");
}

/// OpenClaw's layout as the sidecar sees it through a root map: the
/// workload's `/data` is the sidecar's `<tmp>/workload`.
#[tokio::test]
async fn the_persons_own_skills_are_found_where_openclaw_loads_them() {
    use super::{OpenClawSkills, WorkloadSkills};
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("workload");
    let write = |rel: &str, name: &str| {
        let d = seen.join(rel);
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("SKILL.md"),
            format!("---\nname: {name}\ndescription: {name} things\n---\n"),
        )
        .unwrap();
    };
    fs::create_dir_all(seen.join("openclaw")).unwrap();
    fs::write(
        seen.join("openclaw/openclaw.json"),
        "{ agents: { defaults: { workspace: '/data/ws' } } }",
    )
    .unwrap();
    write("ws/skills/standup", "standup");
    write("ws/skills/grouped/deep/review", "review");
    write("ws/.agents/skills/triage", "triage");
    write("openclaw/skills/standup-dup", "standup");
    let view = OpenClawSkills {
        config_path: "/data/openclaw/openclaw.json".into(),
        state_dir: "/data/openclaw".into(),
        root_map: Some(("/data".into(), seen.clone())),
    };
    let own = view.own().await.unwrap();
    let names: Vec<&str> = own.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["review", "standup", "triage"],
        "the workspace's copy wins"
    );
    assert!(own.iter().all(|s| s.source == "own"));
    let b = view.export("standup").await.unwrap();
    assert_eq!(b.files[0].path, "SKILL.md");
    let e = view.export("absent").await.unwrap_err();
    assert!(e.contains("its own are: review, standup, triage"), "{e}");
}
