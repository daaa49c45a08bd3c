//! What a well-formed `SkillBundle` is: the wire contract both ends of
//! AgentLink check, and the library checks before it stores one. A skill
//! becomes files on an agent's volume, so names and paths are held to a
//! strict shape here rather than trusted.

use std::{
    io::{self, Write},
    path::Path,
};

use crate::v1::{SkillBundle, SkillFile};

/// The file every skill has.
pub const SKILL_FILE: &str = "SKILL.md";
/// Longest skill name (OpenClaw's and AgentSkills' own limit is 64).
pub const MAX_NAME_LEN: usize = 64;
pub const MAX_FILES: usize = 64;
/// Whole bundle; skills are instructions and small scripts, and a bundle
/// travels as one AgentLink frame.
pub const MAX_BUNDLE_BYTES: usize = 512 * 1024;
const MAX_PATH_LEN: usize = 200;
const MAX_DEPTH: usize = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error(
        "skill name {0:?} is not valid: 1-{MAX_NAME_LEN} lowercase letters, digits and hyphens, starting with a letter"
    )]
    Name(String),
    #[error("skill {0:?} has no {SKILL_FILE}")]
    NoSkillFile(String),
    #[error("skill {skill:?}: file path {path:?} is not allowed: {why}")]
    Path {
        skill: String,
        path: String,
        why: &'static str,
    },
    #[error("skill {skill:?} has the file {path:?} twice")]
    Duplicate { skill: String, path: String },
    #[error("skill {0:?} has more than {MAX_FILES} files")]
    TooManyFiles(String),
    #[error("skill {0:?} is larger than {MAX_BUNDLE_BYTES} bytes")]
    TooLarge(String),
    #[error("skill {0:?}: {SKILL_FILE} is not UTF-8 text")]
    NotText(String),
}

/// `pipeline-status`: a DNS-label-like name, safe as a directory name, a
/// Kubernetes object name suffix and a label value.
pub fn validate_name(name: &str) -> Result<(), BundleError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(BundleError::Name(name.to_owned()))
    }
}

/// A relative path of plain components: no `..`, no absolute paths, no
/// hidden files, nothing a shell or a mount would read twice.
fn validate_path(skill: &str, path: &str) -> Result<(), BundleError> {
    let bad = |why| BundleError::Path {
        skill: skill.to_owned(),
        path: path.to_owned(),
        why,
    };
    if path.is_empty() || path.len() > MAX_PATH_LEN {
        return Err(bad("empty or too long"));
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() > MAX_DEPTH {
        return Err(bad("nested too deep"));
    }
    for part in parts {
        if part.is_empty() || part.starts_with('.') {
            return Err(bad("empty, hidden or parent component"));
        }
        // `__` stands for `/` where a store has flat keys (ConfigMaps).
        if part.contains("__") {
            return Err(bad("'__' is reserved"));
        }
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(bad("only letters, digits, '-', '_' and '.' are allowed"));
        }
    }
    Ok(())
}

/// Check everything above; on success the bundle can be written file by
/// file under a directory named after it.
pub fn validate(bundle: &SkillBundle) -> Result<(), BundleError> {
    let name = &bundle.name;
    validate_name(name)?;
    if bundle.files.len() > MAX_FILES {
        return Err(BundleError::TooManyFiles(name.clone()));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut total = 0usize;
    for SkillFile { path, content } in &bundle.files {
        validate_path(name, path)?;
        if !seen.insert(path.as_str()) {
            return Err(BundleError::Duplicate {
                skill: name.clone(),
                path: path.clone(),
            });
        }
        total = total
            .saturating_add(content.len())
            .saturating_add(path.len());
        if total > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge(name.clone()));
        }
    }
    // A directory and a file of the same name cannot both be written.
    for p in &seen {
        let dir = format!("{p}/");
        if seen.iter().any(|q| q.starts_with(&dir)) {
            return Err(BundleError::Path {
                skill: name.clone(),
                path: (*p).to_owned(),
                why: "is both a file and a directory",
            });
        }
    }
    let skill_md = bundle
        .files
        .iter()
        .find(|f| f.path == SKILL_FILE)
        .ok_or_else(|| BundleError::NoSkillFile(name.clone()))?;
    if std::str::from_utf8(&skill_md.content).is_err() {
        return Err(BundleError::NotText(name.clone()));
    }
    Ok(())
}

/// The value of `key:` in SKILL.md's front matter, if it has one. Only
/// the simple one-line form is read.
pub fn front_matter(skill_md: &str, key: &str) -> Option<String> {
    let mut lines = skill_md.lines();
    if lines.next().map(str::trim) != Some("---") {
        return None;
    }
    lines
        .map(str::trim_end)
        .take_while(|l| l.trim() != "---")
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::to_owned))
        .map(|v| v.trim().trim_matches(['"', '\'']).to_owned())
        .filter(|v| !v.is_empty())
}

/// The `description:` of SKILL.md's front matter (what listings show).
pub fn description(skill_md: &str) -> String {
    front_matter(skill_md, "description").unwrap_or_default()
}

/// [`description`] of a bundle's SKILL.md.
pub fn bundle_description(bundle: &SkillBundle) -> String {
    bundle
        .files
        .iter()
        .find(|f| f.path == SKILL_FILE)
        .and_then(|f| std::str::from_utf8(&f.content).ok())
        .map(description)
        .unwrap_or_default()
}

/// Write a validated bundle's files under `root` (created).
pub fn write_dir(root: &Path, bundle: &SkillBundle) -> io::Result<()> {
    std::fs::create_dir_all(root)?;
    for f in &bundle.files {
        // Validated: relative, plain components, no `..`.
        let path = root.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = std::fs::File::create(&path)?;
        out.write_all(&f.content)?;
        out.sync_all()?;
    }
    Ok(())
}

/// Read a skill directory into a bundle (hidden entries left out),
/// refusing what [`validate`] would refuse and symlinks, which could point
/// anywhere.
pub fn read_dir(name: &str, dir: &Path) -> Result<SkillBundle, String> {
    let mut files = Vec::new();
    let mut total = 0usize;
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((at, prefix)) = stack.pop() {
        let entries =
            std::fs::read_dir(&at).map_err(|e| format!("cannot read {}: {e}", at.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read {}: {e}", at.display()))?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            // Hidden entries are not the skill: OpenClaw's install record
            // (`.openclaw/`), version control, editor files.
            if file_name.starts_with('.') {
                continue;
            }
            let rel = if prefix.is_empty() {
                file_name.clone()
            } else {
                format!("{prefix}/{file_name}")
            };
            let kind = entry
                .file_type()
                .map_err(|e| format!("cannot read {}: {e}", entry.path().display()))?;
            if kind.is_symlink() {
                return Err(format!(
                    "skill {name:?}: {rel} is a symlink; copy the file in instead"
                ));
            } else if kind.is_dir() {
                stack.push((entry.path(), rel));
            } else {
                let content = std::fs::read(entry.path())
                    .map_err(|e| format!("cannot read {}: {e}", entry.path().display()))?;
                total = total.saturating_add(content.len());
                if total > MAX_BUNDLE_BYTES || files.len() >= MAX_FILES {
                    return Err(BundleError::TooLarge(name.to_owned()).to_string());
                }
                files.push(SkillFile { path: rel, content });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let bundle = SkillBundle {
        name: name.to_owned(),
        files,
    };
    validate(&bundle).map_err(|e| e.to_string())?;
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(name: &str, files: &[(&str, &str)]) -> SkillBundle {
        SkillBundle {
            name: name.into(),
            files: files
                .iter()
                .map(|(p, c)| SkillFile {
                    path: (*p).into(),
                    content: c.as_bytes().to_vec(),
                })
                .collect(),
        }
    }

    const SKILL: &str =
        "---\nname: pipeline-status\ndescription: \"Status of a CI pipeline\"\n---\nbody";

    #[test]
    fn a_skill_with_supporting_files_is_well_formed() {
        let b = bundle(
            "pipeline-status",
            &[(SKILL_FILE, SKILL), ("scripts/check.sh", "echo ok")],
        );
        assert_eq!(validate(&b), Ok(()));
        assert_eq!(bundle_description(&b), "Status of a CI pipeline");
    }

    #[test]
    fn names_that_are_not_plain_labels_are_refused() {
        for name in [
            "",
            "Pipeline",
            "-x",
            "x-",
            "a_b",
            "a/b",
            "..",
            &"a".repeat(65),
        ] {
            assert!(
                matches!(validate_name(name), Err(BundleError::Name(_))),
                "{name:?}"
            );
        }
    }

    #[test]
    fn paths_that_escape_or_hide_are_refused() {
        for path in [
            "../x",
            "/etc/passwd",
            "a/../../x",
            ".hidden",
            "a//b",
            "a/b/c/d/e",
            "sp ace",
            "a\\b",
            "a__b",
            "",
        ] {
            let b = bundle("ok", &[(SKILL_FILE, SKILL), (path, "x")]);
            assert!(
                matches!(validate(&b), Err(BundleError::Path { .. })),
                "{path:?}: {:?}",
                validate(&b)
            );
        }
    }

    #[test]
    fn a_bundle_without_skill_md_or_too_big_or_doubled_is_refused() {
        assert_eq!(
            validate(&bundle("ok", &[("README.md", "x")])),
            Err(BundleError::NoSkillFile("ok".into()))
        );
        let big = "x".repeat(MAX_BUNDLE_BYTES);
        assert_eq!(
            validate(&bundle("ok", &[(SKILL_FILE, SKILL), ("big", &big)])),
            Err(BundleError::TooLarge("ok".into()))
        );
        assert!(matches!(
            validate(&bundle("ok", &[(SKILL_FILE, SKILL), (SKILL_FILE, SKILL)])),
            Err(BundleError::Duplicate { .. })
        ));
        assert!(matches!(
            validate(&bundle(
                "ok",
                &[(SKILL_FILE, SKILL), ("a", "x"), ("a/b", "y")]
            )),
            Err(BundleError::Path { .. })
        ));
    }

    #[test]
    fn description_reads_only_the_front_matter() {
        assert_eq!(description("no front matter\ndescription: x"), "");
        assert_eq!(
            description("---\ndescription: plain words\n---"),
            "plain words"
        );
        assert_eq!(
            front_matter("---\nname: 'mine'\n---", "name").as_deref(),
            Some("mine")
        );
        assert_eq!(front_matter("---\nnamespace: x\n---", "name"), None);
    }
}
