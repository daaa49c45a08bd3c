//! Per-agent values for the local runtime's templates (workload command,
//! workload environment, sidecar environment).
//!
//! A workload may need more than the one `{port}`: extra loopback ports
//! (`{port:NAME}`) and secrets its process and the sidecar share
//! (`{secret:NAME}`). The runtime hands these out without knowing what they
//! are for, and keeps them in the agent's run directory so a restarted
//! controller, and the processes it adopts, agree on the same values.

use std::{
    fs,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use rand::RngCore;

use super::process::free_port;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{var}: entry {entry:?} is not KEY=template")]
    NotPair { var: String, entry: String },
    #[error("{var}: {key:?} is not an environment variable name")]
    BadKey { var: String, key: String },
    #[error(
        "{var}: {placeholder:?} is not a known placeholder ({{port}}, {{port:NAME}}, {{secret:NAME}}, {{data_dir}}, {{sidecar_dir}}, {{shared_dir}}, {{run_dir}}, {{agent}})"
    )]
    Unknown { var: String, placeholder: String },
    #[error("{var}: {{port}} needs a workload command (CLAWSWARM_WORKLOAD_COMMAND)")]
    PortWithoutWorkload { var: String },
    #[error("cannot keep {what} in {path}: {source}")]
    Io {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl TemplateError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NotPair { .. } | Self::BadKey { .. } => "bad_entry",
            Self::Unknown { .. } => "bad_placeholder",
            Self::PortWithoutWorkload { .. } => "port_without_workload",
            Self::Io { .. } => "io",
        }
    }
}

/// One piece of a parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Port,
    NamedPort(String),
    Secret(String),
    DataDir,
    SidecarDir,
    SharedDir,
    RunDir,
    Agent,
}

/// A string with placeholders, checked once at startup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// `var` names the setting the template came from, for errors.
    ///
    /// A placeholder is `{word}` or `{word:NAME}` with a lowercase word;
    /// other braces (shell groups `{ …; }`, `${VAR}`) stay as written, so
    /// commands need no escaping. An unknown word is an error, not text: a
    /// typo must not reach a process as a literal.
    pub fn parse(var: &str, s: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            text.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let shell_var = text.ends_with('$');
            let inner = after.find('}').map(|close| &after[..close]);
            let Some(inner) = inner.filter(|i| !shell_var && looks_like_placeholder(i)) else {
                text.push('{');
                rest = after;
                continue;
            };
            let unknown = || TemplateError::Unknown {
                var: var.to_owned(),
                placeholder: format!("{{{inner}}}"),
            };
            let part = match inner.split_once(':') {
                None => match inner {
                    "port" => Part::Port,
                    "data_dir" => Part::DataDir,
                    "sidecar_dir" => Part::SidecarDir,
                    "shared_dir" => Part::SharedDir,
                    "run_dir" => Part::RunDir,
                    "agent" => Part::Agent,
                    _ => return Err(unknown()),
                },
                Some((kind, name)) if valid_name(name) => match kind {
                    "port" => Part::NamedPort(name.to_owned()),
                    "secret" => Part::Secret(name.to_owned()),
                    _ => return Err(unknown()),
                },
                Some(_) => return Err(unknown()),
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(part);
            rest = &after[inner.len() + 1..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self { parts })
    }

    pub fn uses_port(&self) -> bool {
        self.parts.contains(&Part::Port)
    }

    /// Names of the `{port:NAME}` placeholders.
    pub fn named_ports(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::NamedPort(n) => Some(n.as_str()),
            _ => None,
        })
    }
}

/// `word` or `word:anything-without-spaces`, word in lowercase.
fn looks_like_placeholder(inner: &str) -> bool {
    let (word, name) = match inner.split_once(':') {
        Some((w, n)) => (w, Some(n)),
        None => (inner, None),
    };
    !word.is_empty()
        && word.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        && name.is_none_or(|n| !n.contains(char::is_whitespace))
}

/// Names of ports and secrets become file names: keep them plain.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `KEY=template;KEY=template` from the setting `var`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvTemplate {
    pub vars: Vec<(String, Template)>,
}

impl EnvTemplate {
    pub fn parse(var: &str, s: &str) -> Result<Self, TemplateError> {
        let mut vars = Vec::new();
        for entry in s.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (key, value) = entry
                .split_once('=')
                .ok_or_else(|| TemplateError::NotPair {
                    var: var.to_owned(),
                    entry: entry.to_owned(),
                })?;
            let key = key.trim();
            let key_ok = !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !key_ok {
                return Err(TemplateError::BadKey {
                    var: var.to_owned(),
                    key: key.to_owned(),
                });
            }
            vars.push((key.to_owned(), Template::parse(var, value)?));
        }
        Ok(Self { vars })
    }

    pub fn named_ports(&self) -> impl Iterator<Item = &str> {
        self.vars.iter().flat_map(|(_, t)| t.named_ports())
    }

    /// Refuse `{port}` when no workload command gives it a value.
    pub fn check_port(&self, var: &str, has_workload: bool) -> Result<(), TemplateError> {
        if !has_workload && self.vars.iter().any(|(_, t)| t.uses_port()) {
            return Err(TemplateError::PortWithoutWorkload {
                var: var.to_owned(),
            });
        }
        Ok(())
    }
}

/// One agent's values; ports and secrets are created on first use and kept
/// under `run_dir/values/`.
pub struct AgentValues<'a> {
    pub agent: &'a str,
    pub data_dir: &'a Path,
    /// The sidecar's own persistent files (never in a workload's sandbox).
    pub sidecar_dir: &'a Path,
    /// Files and sockets the workload and its sidecar share.
    pub shared_dir: &'a Path,
    pub run_dir: &'a Path,
    /// The workload's `{port}`, when there is a workload.
    pub port: Option<u16>,
}

impl AgentValues<'_> {
    pub fn render(&self, t: &Template) -> Result<String, TemplateError> {
        let mut out = String::new();
        for part in &t.parts {
            match part {
                Part::Text(s) => out.push_str(s),
                // Validation refuses {port} without a workload; render it
                // empty rather than fail should that ever be bypassed.
                Part::Port => {
                    if let Some(p) = self.port {
                        out.push_str(&p.to_string());
                    }
                }
                Part::NamedPort(name) => out.push_str(&self.named_port(name)?.to_string()),
                Part::Secret(name) => out.push_str(&self.secret(name)?),
                Part::DataDir => out.push_str(&self.data_dir.display().to_string()),
                Part::SidecarDir => out.push_str(&self.sidecar_dir.display().to_string()),
                Part::SharedDir => out.push_str(&self.shared_dir.display().to_string()),
                Part::RunDir => out.push_str(&self.run_dir.display().to_string()),
                Part::Agent => out.push_str(self.agent),
            }
        }
        Ok(out)
    }

    pub fn render_env(&self, env: &EnvTemplate) -> Result<Vec<(String, String)>, TemplateError> {
        env.vars
            .iter()
            .map(|(k, t)| Ok((k.clone(), self.render(t)?)))
            .collect()
    }

    fn values_dir(&self) -> Result<PathBuf, TemplateError> {
        let dir = self.run_dir.join("values");
        fs::create_dir_all(&dir).map_err(|source| TemplateError::Io {
            what: "template values".into(),
            path: dir.clone(),
            source,
        })?;
        Ok(dir)
    }

    /// The agent's port `name`: the recorded one, or a new free loopback
    /// port distinct from the agent's other ports.
    pub fn named_port(&self, name: &str) -> Result<u16, TemplateError> {
        let dir = self.values_dir()?;
        let path = dir.join(format!("port.{name}"));
        if let Some(p) = read_trimmed(&path).and_then(|s| s.parse::<u16>().ok())
            && p != 0
        {
            return Ok(p);
        }
        let io = |source| TemplateError::Io {
            what: format!("port {name}"),
            path: path.clone(),
            source,
        };
        let taken = self.recorded_ports(&dir);
        let mut port = free_port().map_err(io)?;
        // The kernel may hand the same ephemeral port out twice in a row.
        for _ in 0..16 {
            if !taken.contains(&port) {
                break;
            }
            port = free_port().map_err(io)?;
        }
        write_private(&path, port.to_string().as_bytes()).map_err(io)?;
        Ok(port)
    }

    fn recorded_ports(&self, dir: &Path) -> Vec<u16> {
        let mut taken: Vec<u16> = self.port.into_iter().collect();
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("port.")
                    && let Some(p) = read_trimmed(&e.path()).and_then(|s| s.parse().ok())
                {
                    taken.push(p);
                }
            }
        }
        taken
    }

    /// The agent's secret `name`: 32 random bytes as hex, readable only by
    /// this user.
    pub fn secret(&self, name: &str) -> Result<String, TemplateError> {
        let dir = self.values_dir()?;
        let path = dir.join(format!("secret.{name}"));
        if let Some(s) = read_trimmed(&path).filter(|s| s.len() == 64) {
            return Ok(s);
        }
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let secret = hex::encode(raw);
        write_private(&path, secret.as_bytes()).map_err(|source| TemplateError::Io {
            what: format!("secret {name}"),
            path: path.clone(),
            source,
        })?;
        Ok(secret)
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// Created 0600 from the start (never world-readable, even briefly), then
/// renamed into place.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(dir: &'a Path, data: &'a Path) -> AgentValues<'a> {
        AgentValues {
            agent: "alice",
            data_dir: data,
            sidecar_dir: data,
            shared_dir: dir,
            run_dir: dir,
            port: Some(4000),
        }
    }

    #[test]
    fn every_placeholder_is_substituted() {
        let run = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let v = values(run.path(), data.path());
        let t = Template::parse(
            "X",
            "a={agent} p={port} d={data_dir} r={run_dir} q={port:proxy} s={secret:gw}",
        )
        .unwrap();
        let out = v.render(&t).unwrap();
        let q = v.named_port("proxy").unwrap();
        let s = v.secret("gw").unwrap();
        assert_eq!(
            out,
            format!(
                "a=alice p=4000 d={} r={} q={q} s={s}",
                data.path().display(),
                run.path().display()
            )
        );
        assert_ne!(q, 4000);
        assert_eq!(s.len(), 64);
        assert!(s.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn ports_and_secrets_persist_across_runtimes_and_differ_by_name() {
        let run = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let first = values(run.path(), data.path());
        let (a, b) = (
            first.named_port("a").unwrap(),
            first.named_port("b").unwrap(),
        );
        let (s1, s2) = (first.secret("one").unwrap(), first.secret("two").unwrap());
        assert_ne!(a, b);
        assert_ne!(s1, s2);
        // A restarted controller builds new values over the same run dir.
        let again = values(run.path(), data.path());
        assert_eq!(again.named_port("a").unwrap(), a);
        assert_eq!(again.named_port("b").unwrap(), b);
        assert_eq!(again.secret("one").unwrap(), s1);
        assert_eq!(again.secret("two").unwrap(), s2);
        let mode = fs::metadata(run.path().join("values/secret.one"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Another agent gets its own.
        let other_run = tempfile::tempdir().unwrap();
        let other = values(other_run.path(), data.path());
        assert_ne!(other.secret("one").unwrap(), s1);
    }

    #[test]
    fn env_lists_parse_and_render_in_order() {
        let env =
            EnvTemplate::parse("CLAWSWARM_LOCAL_SIDECAR_ENV", " A=x{port}; B = {agent} ;").unwrap();
        let run = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let out = values(run.path(), data.path()).render_env(&env).unwrap();
        assert_eq!(
            out,
            vec![("A".into(), "x4000".into()), ("B".into(), " alice".into())]
        );
        // Values may contain '=' (URLs with queries).
        let env = EnvTemplate::parse("V", "U=http://h/?a=b").unwrap();
        assert_eq!(
            values(run.path(), data.path()).render_env(&env).unwrap(),
            vec![("U".into(), "http://h/?a=b".into())]
        );
    }

    #[test]
    fn shell_braces_are_left_as_written() {
        let run = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let cmd = "{ test -f x || cp ${HOME}/y x; } && echo {agent} {A} {port";
        let t = Template::parse("CLAWSWARM_WORKLOAD_COMMAND", cmd).unwrap();
        assert_eq!(
            values(run.path(), data.path()).render(&t).unwrap(),
            "{ test -f x || cp ${HOME}/y x; } && echo alice {A} {port"
        );
    }

    #[test]
    fn bad_templates_are_refused_naming_the_setting() {
        for bad in [
            "NOVALUE",
            "=x",
            "1A=x",
            "A-B=x",
            "A={nope}",
            "A={port:}",
            "A={port:../x}",
            "A={secret}",
            "A={file:x}",
        ] {
            let e = EnvTemplate::parse("CLAWSWARM_LOCAL_WORKLOAD_ENV", bad).unwrap_err();
            assert!(
                e.to_string().starts_with("CLAWSWARM_LOCAL_WORKLOAD_ENV"),
                "{bad}: {e}"
            );
        }
        let env = EnvTemplate::parse("CLAWSWARM_LOCAL_SIDECAR_ENV", "A={port}").unwrap();
        let e = env
            .check_port("CLAWSWARM_LOCAL_SIDECAR_ENV", false)
            .unwrap_err();
        assert!(e.to_string().contains("CLAWSWARM_LOCAL_SIDECAR_ENV"));
        assert!(env.check_port("CLAWSWARM_LOCAL_SIDECAR_ENV", true).is_ok());
    }
}
