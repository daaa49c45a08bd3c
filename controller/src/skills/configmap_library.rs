//! The library as ConfigMaps in the controller's namespace (Kubernetes):
//! admins manage skills with `kubectl` or GitOps, and RBAC decides who
//! may. A library skill is a ConfigMap labelled
//! `clawswarm.dev/skill-library=true` and `clawswarm.dev/skill=<name>`
//! whose keys are the skill's files (`SKILL.md`, …; `__` stands for `/`);
//! a proposal is `skill-proposal-<name>`, labelled
//! `clawswarm.dev/skill-proposal=<state>`, that approval copies to
//! `skill-<name>`. A ConfigMap holds at most 1 MiB, twice a bundle's cap.

use std::collections::BTreeMap;

use async_trait::async_trait;
use clawswarm_proto::{skill_bundle, v1 as pb};
use k8s_openapi::{ByteString, api::core::v1::ConfigMap};
use kube::{
    Api, Client,
    api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};

use super::library::{LibraryError, LibrarySkill, Proposal, ProposalState, SkillLibrary};

pub const SKILL_LABEL: &str = "clawswarm.dev/skill";
pub const LIBRARY_LABEL: &str = "clawswarm.dev/skill-library";
pub const PROPOSAL_LABEL: &str = "clawswarm.dev/skill-proposal";
const AGENT_ANNOTATION: &str = "clawswarm.dev/proposed-by-agent";
const OWNER_ANNOTATION: &str = "clawswarm.dev/proposed-by";
const MANAGER: &str = "clawswarm-controller";

pub struct ConfigMapLibrary {
    api: Api<ConfigMap>,
}

fn unavailable(e: kube::Error) -> LibraryError {
    LibraryError::Unavailable(e.to_string())
}

fn key_of(path: &str) -> String {
    path.replace('/', "__")
}

fn path_of(key: &str) -> String {
    key.replace("__", "/")
}

fn label<'a>(cm: &'a ConfigMap, key: &str) -> Option<&'a str> {
    cm.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

fn annotation(cm: &ConfigMap, key: &str) -> String {
    cm.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .cloned()
        .unwrap_or_default()
}

/// The ConfigMap's keys as a bundle, checked like any other bundle.
fn bundle_of(name: &str, cm: &ConfigMap) -> Result<pb::SkillBundle, LibraryError> {
    let mut files: Vec<pb::SkillFile> = Vec::new();
    for (k, v) in cm.data.iter().flatten() {
        files.push(pb::SkillFile {
            path: path_of(k),
            content: v.clone().into_bytes(),
        });
    }
    for (k, v) in cm.binary_data.iter().flatten() {
        files.push(pb::SkillFile {
            path: path_of(k),
            content: v.0.clone(),
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let bundle = pb::SkillBundle {
        name: name.to_owned(),
        files,
    };
    skill_bundle::validate(&bundle).map_err(|e| LibraryError::Damaged {
        name: name.to_owned(),
        message: e.to_string(),
    })?;
    Ok(bundle)
}

fn config_map(
    object: String,
    bundle: &pb::SkillBundle,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
) -> ConfigMap {
    let mut data = BTreeMap::new();
    let mut binary = BTreeMap::new();
    for f in &bundle.files {
        match String::from_utf8(f.content.clone()) {
            Ok(text) => {
                data.insert(key_of(&f.path), text);
            }
            Err(_) => {
                binary.insert(key_of(&f.path), ByteString(f.content.clone()));
            }
        }
    }
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(object),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        },
        data: Some(data),
        binary_data: (!binary.is_empty()).then_some(binary),
        ..Default::default()
    }
}

impl ConfigMapLibrary {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
        }
    }

    async fn library_maps(&self) -> Result<Vec<ConfigMap>, LibraryError> {
        let lp = ListParams::default().labels(&format!("{LIBRARY_LABEL}=true,{SKILL_LABEL}"));
        Ok(self.api.list(&lp).await.map_err(unavailable)?.items)
    }

    fn proposal_of(cm: &ConfigMap) -> Option<Proposal> {
        let name = label(cm, SKILL_LABEL)?.to_owned();
        let state = ProposalState::parse(label(cm, PROPOSAL_LABEL)?)?;
        let bundle = bundle_of(&name, cm).ok()?;
        Some(Proposal::of(
            &bundle,
            &annotation(cm, AGENT_ANNOTATION),
            &annotation(cm, OWNER_ANNOTATION),
            state,
        ))
    }

    async fn set_state(&self, name: &str, state: ProposalState) -> Result<(), LibraryError> {
        let patch = serde_json::json!({"metadata": {"labels": {PROPOSAL_LABEL: state.as_str()}}});
        self.api
            .patch(
                &format!("skill-proposal-{name}"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl SkillLibrary for ConfigMapLibrary {
    async fn list(&self) -> Result<Vec<LibrarySkill>, LibraryError> {
        let mut out: Vec<LibrarySkill> = self
            .library_maps()
            .await?
            .iter()
            .filter_map(|cm| {
                let name = label(cm, SKILL_LABEL)?;
                skill_bundle::validate_name(name).ok()?;
                let skill_md = cm.data.as_ref()?.get(skill_bundle::SKILL_FILE)?;
                Some(LibrarySkill {
                    name: name.to_owned(),
                    description: skill_bundle::description(skill_md),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|a, b| a.name == b.name);
        Ok(out)
    }

    async fn get(&self, name: &str) -> Result<Option<pb::SkillBundle>, LibraryError> {
        skill_bundle::validate_name(name)?;
        let found = self
            .library_maps()
            .await?
            .into_iter()
            .find(|cm| label(cm, SKILL_LABEL) == Some(name));
        found.map(|cm| bundle_of(name, &cm)).transpose()
    }

    async fn propose(
        &self,
        bundle: &pb::SkillBundle,
        agent: &str,
        owner: &str,
    ) -> Result<Proposal, LibraryError> {
        skill_bundle::validate(bundle)?;
        if self.get(&bundle.name).await?.is_some() {
            return Err(LibraryError::NameTaken(bundle.name.clone()));
        }
        let labels = BTreeMap::from([
            (SKILL_LABEL.to_owned(), bundle.name.clone()),
            (PROPOSAL_LABEL.to_owned(), "pending".to_owned()),
        ]);
        let annotations = BTreeMap::from([
            (AGENT_ANNOTATION.to_owned(), agent.to_owned()),
            (OWNER_ANNOTATION.to_owned(), owner.to_owned()),
        ]);
        let object = format!("skill-proposal-{}", bundle.name);
        let cm = config_map(object.clone(), bundle, labels, annotations);
        self.api
            .patch(
                &object,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&cm),
            )
            .await
            .map_err(unavailable)?;
        Ok(Proposal::of(bundle, agent, owner, ProposalState::Pending))
    }

    async fn proposals(&self) -> Result<Vec<Proposal>, LibraryError> {
        let lp = ListParams::default().labels(&format!("{PROPOSAL_LABEL},{SKILL_LABEL}"));
        let mut out: Vec<Proposal> = self
            .api
            .list(&lp)
            .await
            .map_err(unavailable)?
            .items
            .iter()
            .filter_map(Self::proposal_of)
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn review(&self, name: &str, approve: bool) -> Result<Proposal, LibraryError> {
        skill_bundle::validate_name(name)?;
        let object = format!("skill-proposal-{name}");
        let cm = self
            .api
            .get_opt(&object)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| LibraryError::NoSuchProposal(name.to_owned()))?;
        let mut p =
            Self::proposal_of(&cm).ok_or_else(|| LibraryError::NoSuchProposal(name.to_owned()))?;
        p.ensure_pending()?;
        if approve {
            if self.get(name).await?.is_some() {
                return Err(LibraryError::NameTaken(name.to_owned()));
            }
            let bundle = bundle_of(name, &cm)?;
            let labels = BTreeMap::from([
                (SKILL_LABEL.to_owned(), name.to_owned()),
                (LIBRARY_LABEL.to_owned(), "true".to_owned()),
            ]);
            let annotations = BTreeMap::from([
                (AGENT_ANNOTATION.to_owned(), p.agent.clone()),
                (OWNER_ANNOTATION.to_owned(), p.owner.clone()),
            ]);
            let library = config_map(format!("skill-{name}"), &bundle, labels, annotations);
            self.api
                .create(&PostParams::default(), &library)
                .await
                .map_err(unavailable)?;
            p.state = ProposalState::Approved;
        } else {
            p.state = ProposalState::Rejected;
        }
        self.set_state(name, p.state).await?;
        Ok(p)
    }
}
