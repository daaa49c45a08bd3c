//! The command lines README.md tells people to type, read from the README
//! itself, so a test that runs them fails when an edit breaks them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The repository's README.md.
pub fn path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")
}

/// Every command line of the README's ```sh blocks, in order, with
/// backslash continuations joined and comment-only and blank lines dropped.
pub fn shell_lines() -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path()).context("reading README.md")?;
    Ok(shell_lines_of(&text))
}

/// The README's command lines that contain `needle` (at least one).
pub fn lines_containing(needle: &str) -> Result<Vec<String>> {
    let found: Vec<String> = shell_lines()?
        .into_iter()
        .filter(|l| l.contains(needle))
        .collect();
    if found.is_empty() {
        bail!("README.md has no shell line containing {needle:?}");
    }
    Ok(found)
}

/// The one README command line that contains `needle`.
pub fn line_containing(needle: &str) -> Result<String> {
    let mut found = lines_containing(needle)?;
    if found.len() > 1 {
        bail!("README.md has several shell lines containing {needle:?}: {found:#?}");
    }
    Ok(found.remove(0))
}

/// `line` with every `(placeholder, value)` replaced, failing if one of
/// them does not occur: a substitution that silently stops applying would
/// run the README's line against the wrong thing.
pub fn substitute(line: &str, pairs: &[(&str, &str)]) -> Result<String> {
    let mut out = line.to_owned();
    for (from, to) in pairs {
        if !out.contains(from) {
            bail!("README line {line:?} no longer contains {from:?}");
        }
        out = out.replace(from, to);
    }
    Ok(out)
}

/// The command lines of the ```sh blocks under the README heading
/// `## {heading}` (up to the next `## `).
pub fn section_lines(heading: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path()).context("reading README.md")?;
    let marker = format!("\n## {heading}\n");
    let start = text
        .find(&marker)
        .with_context(|| format!("README.md has no section {heading:?}"))?;
    let body = &text[start + marker.len()..];
    let body = body.split("\n## ").next().unwrap_or(body);
    Ok(shell_lines_of(body))
}

/// Run a README line with bash (`pipefail`, so a failing `curl` in front of
/// a pipe fails the line), `PATH` extended by `path_first`.
pub fn run(line: &str, path_first: &[&Path]) -> Result<std::process::Output> {
    let mut path: Vec<PathBuf> = path_first.iter().map(|p| p.to_path_buf()).collect();
    if let Some(p) = std::env::var_os("PATH") {
        path.extend(std::env::split_paths(&p));
    }
    std::process::Command::new("bash")
        .args(["-o", "pipefail", "-c", line])
        .env("PATH", std::env::join_paths(path)?)
        .output()
        .with_context(|| format!("running {line:?}"))
}

fn shell_lines_of(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if let Some(info) = line.strip_prefix("```") {
            in_sh = !in_sh && matches!(info.trim(), "sh" | "bash" | "shell");
            continue;
        }
        if !in_sh {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        let full = full.trim();
        if !full.is_empty() && !full.starts_with('#') {
            out.push(full.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sh_blocks_yield_joined_command_lines() {
        let md = "text\n```sh\n# comment\nA=1\nfoo --a \\\n  --b   # trailing\n\n```\n```json\n{\"x\":1}\n```\n```sh\nbar\n```\n";
        assert_eq!(
            shell_lines_of(md),
            vec!["A=1", "foo --a --b   # trailing", "bar"]
        );
    }

    #[test]
    fn substitution_of_a_vanished_placeholder_fails() {
        assert_eq!(
            substitute("x TURN_ID y", &[("TURN_ID", "t1")]).unwrap(),
            "x t1 y"
        );
        assert!(substitute("x y", &[("TURN_ID", "t1")]).is_err());
    }
}
