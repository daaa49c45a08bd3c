//! The company skills library, through every real part:
//!
//!   Gateway client → controller (library: a directory, as the local
//!   runtime keeps it) → AgentLink → sidecar (writes the skill where the
//!   sandboxed workload reads it, read-only) → OpenClaw (loads it from
//!   `skills.load.extraDirs`, lists it over its admin RPC, offers it to the
//!   model) → stub model
//!
//! The shipped product: the controller's built-in OpenClaw profile (what
//! `scripts/run-local.sh` runs) and `init`'s baseline. The block is
//! OpenClaw's own installer (`openclaw skills install`, the CLI an agent or
//! person would run) calling the sidecar's install policy, which `init`
//! wrote into the agent's config.
//!
//! One gateway for the file (~20 s to start), so the checks are steps of
//! one test.

// A panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use std::{path::Path, process::Command, time::Duration};

use clawswarm_proto::v1 as pb;
use clawswarm_tests::{
    harness::{Controller, chat, tail_of as tail, workload_tree},
    openclaw::{openclaw_bin, profile_options, wait_ready_with_log},
    stub_model::{StubConfig, StubModel},
};
use tonic::Code;

const PERSON_CONFIG: &str = "{ tools: { deny: ['exec', 'process'] } }";

const PIPELINE_SKILL: &str = "---\nname: pipeline-status\ndescription: Report a CI pipeline's latest run from the pipelines index.\n---\n# Pipeline status\nSearch the pipelines index with company_data__search and report the newest run.\n";

/// `root/name/SKILL.md` and the extra files; `name` "" is `root` itself.
fn write_skill(root: &Path, name: &str, skill_md: &str, extra: &[(&str, &str)]) {
    let dir = if name.is_empty() {
        root.to_owned()
    } else {
        root.join(name)
    };
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("SKILL.md"), skill_md).unwrap();
    for (path, body) in extra {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
}

fn has(list: &pb::ListSkillsResponse, name: &str, source: &str) -> bool {
    list.installed
        .iter()
        .any(|s| s.name == name && s.source == source && s.eligible)
}

/// `ListSkills` until `ok` holds (a sidecar that just reconnected is
/// refreshed in the background), or panic with the last answer.
async fn wait_skills(
    c: &Controller,
    gw: &mut pb::gateway_client::GatewayClient<tonic::transport::Channel>,
    agent: &str,
    what: &str,
    ok: impl Fn(&pb::ListSkillsResponse) -> bool,
) -> pb::ListSkillsResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list = gw
            .list_skills(pb::ListSkillsRequest {
                agent: agent.into(),
            })
            .await
            .unwrap()
            .into_inner();
        if ok(&list) {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {list:#?}\nsidecar log:\n{}",
            tail(&c.sidecar_log(agent))
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `openclaw skills install SPEC` as the agent (or a person at its
/// shell) would run it: OpenClaw's own installer with the agent's config.
fn openclaw_install(openclaw: &Path, data_dir: &Path, spec: &str) -> String {
    let out = Command::new(openclaw)
        .args(["skills", "install", spec])
        .env(
            "OPENCLAW_CONFIG_PATH",
            data_dir.join("openclaw/openclaw.json"),
        )
        .env("OPENCLAW_STATE_DIR", data_dir.join("openclaw/state"))
        .env("HOME", data_dir.join("home"))
        .env("OPENCLAW_OFFLINE", "1")
        .env("OPENCLAW_NO_AUTO_UPDATE", "1")
        .current_dir(data_dir)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_install_from_the_company_library_only_and_propose_their_own() {
    let openclaw = openclaw_bin().unwrap_or_else(|e| panic!("{e}"));
    clawswarm_certs::install_default_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let stub = StubModel::start(StubConfig::default()).await.unwrap();
    let seed = dir.path().join("person-openclaw.json");
    std::fs::write(&seed, PERSON_CONFIG).unwrap();

    // The admin's library: two shared skills.
    let library = dir.path().join("company-skills");
    write_skill(
        &library.join("library"),
        "pipeline-status",
        PIPELINE_SKILL,
        &[("scripts/latest.sh", "echo latest\n")],
    );
    write_skill(
        &library.join("library"),
        "deploy-checklist",
        "---\nname: deploy-checklist\ndescription: Walk through the release checklist.\n---\nSteps.\n",
        &[],
    );

    let opts = profile_options(
        &["alice"],
        &openclaw,
        &seed,
        stub.base_url(),
        vec![
            ("CLAWSWARM_MODEL_API_KEY".into(), "stub-key".into()),
            (
                "CLAWSWARM_SKILLS_LIBRARY".into(),
                library.display().to_string(),
            ),
        ],
    );
    let c = Controller::start(opts).await.unwrap();
    let agent = c.agent_dir("alice");
    let (run_dir, data_dir) = (agent.join("run"), agent.join("data"));
    wait_ready_with_log(&c, "alice").await;
    let mut gw = c.gateway().await.unwrap();

    // 1. What the library offers; nothing installed yet.
    let list = wait_skills(&c, &mut gw, "alice", "the first listing", |_| true).await;
    let offered: Vec<&str> = list.offered.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(offered, ["deploy-checklist", "pipeline-status"]);
    assert!(!list.installed.iter().any(|s| s.source == "library"));

    // 2. Installed from the library: OpenClaw itself loads and lists it.
    gw.add_skill(pb::AddSkillRequest {
        agent: "alice".into(),
        name: "pipeline-status".into(),
    })
    .await
    .unwrap_or_else(|s| panic!("{s:?}\nsidecar log:\n{}", tail(&c.sidecar_log("alice"))));
    let list = wait_skills(
        &c,
        &mut gw,
        "alice",
        "the library skill is installed",
        |l| has(l, "pipeline-status", "library"),
    )
    .await;
    let offered: Vec<&str> = list.offered.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        offered,
        ["deploy-checklist"],
        "installed is no longer offered"
    );
    let shelf = c.sidecar_dir("alice").join("skills/pipeline-status");
    assert_eq!(
        std::fs::read_to_string(shelf.join("scripts/latest.sh")).unwrap(),
        "echo latest\n",
        "supporting files travel with the skill"
    );

    // The model is told about it on the next turn.
    stub.clear_requests();
    let reply = chat(&mut gw, "alice", "dm-1", "how is the nightly pipeline?")
        .await
        .unwrap();
    assert_eq!(reply.outcome(), Some(pb::Outcome::Ok), "{reply:?}");
    let seen = stub
        .requests()
        .iter()
        .any(|r| r.input_texts.iter().any(|t| t.contains("pipeline-status")));
    assert!(seen, "the skill is in the prompt OpenClaw builds");

    // The workload reads the library skills through a read-only mount.
    // (At `<agent>/run/skills` in the sandbox: the sidecar's own dir stays hidden.)
    let shelf_dir = agent.join("run/skills");
    // (The sandbox's own mount namespace: bwrap's parent process is outside it.)
    let line = workload_tree(&run_dir)
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok())
        .find_map(|mounts| {
            mounts
                .lines()
                .find(|l| l.split(' ').nth(4) == Some(shelf_dir.to_str().unwrap()))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no workload process mounts {}", shelf_dir.display()));
    let options = line.split(' ').nth(5).unwrap();
    assert!(
        options.split(',').any(|o| o == "ro"),
        "mounted read-only: {line}"
    );

    // 3. Public registries and git are refused by OpenClaw's own installer.
    let repo = dir.path().join("weather-repo");
    write_skill(
        &repo,
        "",
        "---\nname: weather\ndescription: Weather.\n---\n",
        &[],
    );
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "weather"]);
    let out = openclaw_install(
        &openclaw,
        &data_dir,
        &format!("git:file://{}", repo.display()),
    );
    assert!(
        out.contains("does not install from public registries or git"),
        "the sidecar's policy refused it: {out}"
    );
    let list = wait_skills(&c, &mut gw, "alice", "listing after the refusal", |_| true).await;
    assert!(
        !list.installed.iter().any(|s| s.name == "weather"),
        "nothing was installed"
    );

    // 4. A skill of the person's own (a local copy is theirs to install)…
    let own = dir.path().join("my-standup");
    write_skill(
        &own,
        "",
        "---\nname: my-standup\ndescription: Draft my standup from yesterday's notes.\n---\nDraft it.\n",
        &[],
    );
    let out = openclaw_install(&openclaw, &data_dir, own.to_str().unwrap());
    let list = wait_skills(&c, &mut gw, "alice", "the person's own skill", |l| {
        has(l, "my-standup", "own")
    })
    .await;
    assert!(
        !list.offered.iter().any(|s| s.name == "my-standup"),
        "{out}"
    );

    // …proposed for the library, then approved by an admin.
    let p = gw
        .propose_skill(pb::ProposeSkillRequest {
            agent: "alice".into(),
            name: "my-standup".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (p.state.as_str(), p.owner.as_str()),
        ("pending", "owner-alice")
    );
    assert!(p.files.contains(&"SKILL.md".to_owned()), "{p:?}");
    let listed = gw
        .list_skill_proposals(pb::ListSkillProposalsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.proposals.len(), 1);
    let list = wait_skills(
        &c,
        &mut gw,
        "alice",
        "not in the library before approval",
        |_| true,
    )
    .await;
    assert!(!list.offered.iter().any(|s| s.name == "my-standup"));
    let p = gw
        .review_skill_proposal(pb::ReviewSkillProposalRequest {
            name: "my-standup".into(),
            approve: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.state, "approved");
    assert!(library.join("library/my-standup/SKILL.md").is_file());
    let again = gw
        .review_skill_proposal(pb::ReviewSkillProposalRequest {
            name: "my-standup".into(),
            approve: false,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    // Proposing something that is not the person's own is refused.
    let e = gw
        .propose_skill(pb::ProposeSkillRequest {
            agent: "alice".into(),
            name: "pipeline-status".into(),
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("no skill of its own"), "{e:?}");

    // 5. The library changes: on its next connection the sidecar gets the
    // new copy, and a skill the library dropped is removed.
    write_skill(
        &library.join("library"),
        "pipeline-status",
        &PIPELINE_SKILL.replace("newest run", "newest two runs"),
        &[],
    );
    gw.add_skill(pb::AddSkillRequest {
        agent: "alice".into(),
        name: "deploy-checklist".into(),
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(library.join("library/deploy-checklist")).unwrap();
    c.restart_sidecar("alice", Duration::from_secs(60))
        .await
        .unwrap();
    c.wait_connected("alice", Duration::from_secs(60))
        .await
        .unwrap();
    wait_skills(&c, &mut gw, "alice", "refreshed from the library", |l| {
        !l.installed.iter().any(|s| s.name == "deploy-checklist")
            && std::fs::read_to_string(shelf.join("SKILL.md"))
                .is_ok_and(|t| t.contains("newest two runs"))
    })
    .await;

    // 6. Removed on request; unknown names are clear errors.
    gw.remove_skill(pb::RemoveSkillRequest {
        agent: "alice".into(),
        name: "pipeline-status".into(),
    })
    .await
    .unwrap();
    wait_skills(&c, &mut gw, "alice", "removed", |l| {
        !l.installed.iter().any(|s| s.name == "pipeline-status")
            && l.offered.iter().any(|s| s.name == "pipeline-status")
    })
    .await;
    let e = gw
        .add_skill(pb::AddSkillRequest {
            agent: "alice".into(),
            name: "no-such-skill".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = gw
        .add_skill(pb::AddSkillRequest {
            agent: "alice".into(),
            name: "../../etc".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
}
