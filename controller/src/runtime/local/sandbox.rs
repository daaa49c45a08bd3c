//! Sealed local workloads: each one runs under bubblewrap (`bwrap`).
//!
//! Why bubblewrap and not our own namespace code: it is the small setuid-free
//! tool Flatpak relies on, packaged by Debian, and it does the fiddly parts
//! (mount order, pivot_root, a private `/proc`, dropping capabilities) the
//! way the kernel expects. Writing that again here would be a second,
//! less-reviewed copy.
//!
//! What a workload sees: the host's system directories read-only; its own
//! data directory and its run dir's `shared/` part writable; the program
//! directories it needs read-only; nothing of the controller's state
//! directory (other agents, the CA, records), of the user's home, `/tmp` or
//! `/run`. It gets a private `/proc` (no other process's environment or
//! memory), a fresh `/dev`, and a network namespace of its own: the only
//! ports it reaches are its own sidecar's, carried across by
//! `clawswarm-sidecar sandbox-bridge` (see the sidecar's `sandbox_bridge`).
//! Its environment is the runtime's clean one.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Sandbox settings of `clawswarm run` (local runtime).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct SandboxArgs {
    /// Run local workloads without a sandbox: they can then read this
    /// user's files (other agents' data, the controller's CA key), every
    /// process's environment, and reach every loopback port. For machines
    /// without bubblewrap, knowingly.
    #[arg(long, env = "CLAWSWARM_UNSANDBOXED", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub unsandboxed: bool,

    /// The bubblewrap binary; default `bwrap` on PATH (scripts/deps.sh
    /// bwrap installs one).
    #[arg(long, env = "CLAWSWARM_BWRAP")]
    pub bwrap: Option<PathBuf>,

    /// More read-only paths inside every sandbox (`:`-separated), for a
    /// workload command whose programs live under a hidden directory.
    #[arg(
        long = "sandbox-read-only",
        env = "CLAWSWARM_SANDBOX_READ_ONLY",
        value_delimiter = ':'
    )]
    pub read_only: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "local workloads run sandboxed with bubblewrap, and no `bwrap` was found{detail}: install it \
         (apt-get install bubblewrap, or `scripts/deps.sh bwrap`, which scripts/run-local.sh runs) and/or \
         set CLAWSWARM_BWRAP, or start with --unsandboxed to run workloads without isolation"
    )]
    Missing { detail: String },
    #[error(
        "bubblewrap ({bwrap}) cannot create a sandbox here: {message}. Unprivileged user namespaces \
         may be off (sysctl kernel.unprivileged_userns_clone / user.max_user_namespaces); or start with \
         --unsandboxed to run workloads without isolation"
    )]
    Unusable { bwrap: PathBuf, message: String },
    #[error(
        "sandbox socket {0} is longer than a Unix socket path may be (107 bytes): use a shorter CLAWSWARM_STATE_DIR"
    )]
    SocketPath(PathBuf),
}

/// How sandboxes are built on this machine.
#[derive(Clone, Debug)]
pub struct Sandbox {
    bwrap: PathBuf,
    /// Directories replaced by an empty tmpfs.
    hidden: Vec<PathBuf>,
    /// Re-exposed read-only (program directories under hidden ones).
    read_only: Vec<PathBuf>,
    /// Runs the inside half of the loopback bridge.
    sidecar_bin: PathBuf,
}

/// One agent's sandbox: its directories and the ports it may reach.
pub struct AgentSandbox<'a> {
    pub agent: &'a str,
    pub data_dir: &'a Path,
    pub shared_dir: &'a Path,
    /// Library skills the sidecar installs (docs/skills.md), in its own
    /// dir: the workload reads them at `skills_view`, read-only, and sees
    /// nothing else of the sidecar's dir.
    pub skills_dir: &'a Path,
    pub skills_view: &'a Path,
    /// The workload's own port (the sidecar calls it).
    pub workload_port: u16,
    /// The sidecar's ports the workload calls.
    pub sidecar_ports: &'a [u16],
}

/// What to exec, and what the sidecar must be told.
pub struct Wrapped {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// `CLAWSWARM_SANDBOX_ROUTES` for the agent's sidecar.
    pub sidecar_routes: String,
}

/// Longest Unix socket path (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

impl Sandbox {
    /// The sandbox for this machine, or why there cannot be one. `None`
    /// when told `--unsandboxed`. `state_dir` is hidden from every
    /// workload; `program_dirs` (the sidecar's, the workload's programs)
    /// stay readable.
    pub fn resolve(
        args: &SandboxArgs,
        state_dir: &Path,
        sidecar_bin: &Path,
        program_dirs: &[PathBuf],
    ) -> Result<Option<Self>, SandboxError> {
        if args.unsandboxed {
            return Ok(None);
        }
        let bwrap = match args.bwrap.as_ref().filter(|p| !p.as_os_str().is_empty()) {
            Some(p) if p.is_file() => p.clone(),
            Some(p) => {
                return Err(SandboxError::Missing {
                    detail: format!(" (CLAWSWARM_BWRAP={} does not exist)", p.display()),
                });
            }
            None => on_path("bwrap").ok_or(SandboxError::Missing {
                detail: " on PATH".into(),
            })?,
        };
        let mut hidden: Vec<PathBuf> = ["/tmp", "/var/tmp", "/run"]
            .iter()
            .map(PathBuf::from)
            .collect();
        if let Some(home) = std::env::var_os("HOME").map(PathBuf::from)
            && home.is_absolute()
            && home != Path::new("/")
        {
            hidden.push(home);
        }
        hidden.push(absolute(state_dir));
        let mut read_only: Vec<PathBuf> = program_dirs.iter().map(|p| absolute(p)).collect();
        if let Some(dir) = sidecar_bin.parent() {
            read_only.push(absolute(dir));
        }
        read_only.extend(args.read_only.iter().map(|p| absolute(p)));
        read_only.sort();
        read_only.dedup();
        let sandbox = Self {
            bwrap,
            hidden,
            read_only,
            sidecar_bin: absolute(sidecar_bin),
        };
        sandbox.probe()?;
        Ok(Some(sandbox))
    }

    /// Create one throwaway sandbox now, so a machine where bubblewrap
    /// cannot work says so at start instead of at every agent's start.
    fn probe(&self) -> Result<(), SandboxError> {
        let unusable = |message: String| SandboxError::Unusable {
            bwrap: self.bwrap.clone(),
            message,
        };
        let mut child = Command::new(&self.bwrap)
            .args(["--unshare-all", "--ro-bind", "/", "/", "--proc", "/proc"])
            .args(["--dev", "/dev", "--", "/bin/true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| unusable(e.to_string()))?;
        let deadline = Instant::now() + PROBE_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut err);
                    }
                    return Err(unusable(format!("{status}: {}", err.trim())));
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(unusable(format!("no answer within {PROBE_TIMEOUT:?}")));
                }
                Err(e) => return Err(unusable(e.to_string())),
            }
        }
    }

    /// `bwrap … -- clawswarm-sidecar sandbox-bridge … -- /bin/sh -c "exec COMMAND"`.
    pub fn wrap(&self, a: &AgentSandbox<'_>, command: &str) -> Result<Wrapped, SandboxError> {
        let socket = |name: &str| -> Result<PathBuf, SandboxError> {
            let p = a.shared_dir.join(name);
            if p.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(SandboxError::SocketPath(p));
            }
            Ok(p)
        };
        let mut routes = vec![format!(
            "serve:127.0.0.1:{}={}",
            a.workload_port,
            socket("w.sock")?.display()
        )];
        for (i, port) in a.sidecar_ports.iter().enumerate() {
            routes.push(format!(
                "expose:127.0.0.1:{port}={}",
                socket(&format!("s{i}.sock"))?.display()
            ));
        }

        let s = |p: &Path| p.display().to_string();
        let mut args: Vec<String> = vec![
            "--unshare-all".into(),
            // No --die-with-parent: the parent is the controller, and the
            // workload must outlive a controller that dies (adoption). A
            // stop ends the whole process group instead (`Proc::stop`).
            "--hostname".into(),
            format!("agent-{}", a.agent),
            "--ro-bind".into(),
            "/".into(),
            "/".into(),
        ];
        for h in &self.hidden {
            args.extend(["--tmpfs".into(), s(h)]);
        }
        for r in &self.read_only {
            if r.exists() {
                args.extend(["--ro-bind".into(), s(r), s(r)]);
            }
        }
        for rw in [a.data_dir, a.shared_dir] {
            args.extend(["--bind".into(), s(rw), s(rw)]);
        }
        args.extend(["--ro-bind".into(), s(a.skills_dir), s(a.skills_view)]);
        args.extend(
            ["--proc", "/proc", "--dev", "/dev", "--chdir"]
                .iter()
                .map(|x| (*x).to_owned()),
        );
        args.push(s(a.data_dir));
        args.extend(["--".into(), s(&self.sidecar_bin), "sandbox-bridge".into()]);
        for r in &routes {
            args.extend(["--route".into(), r.clone()]);
        }
        args.extend([
            "--".into(),
            "/bin/sh".into(),
            "-c".into(),
            format!("exec {command}"),
        ]);
        Ok(Wrapped {
            program: self.bwrap.clone(),
            args,
            sidecar_routes: routes.join(";"),
        })
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Mounts need absolute paths; a relative state dir is relative to here.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox() -> Sandbox {
        Sandbox {
            bwrap: "/usr/bin/bwrap".into(),
            hidden: vec![
                "/tmp".into(),
                "/home/me".into(),
                "/home/me/.local/share/cs".into(),
            ],
            read_only: vec!["/home/me/bin".into()],
            sidecar_bin: "/home/me/bin/clawswarm-sidecar".into(),
        }
    }

    #[test]
    fn the_workload_gets_its_own_dirs_and_only_its_sidecars_ports() {
        let w = sandbox()
            .wrap(
                &AgentSandbox {
                    agent: "alice",
                    data_dir: Path::new("/home/me/.local/share/cs/agents/alice/data"),
                    shared_dir: Path::new("/home/me/.local/share/cs/agents/alice/run/shared"),
                    skills_dir: Path::new("/home/me/.local/share/cs/agents/alice/sidecar/skills"),
                    skills_view: Path::new("/home/me/.local/share/cs/agents/alice/run/skills"),
                    workload_port: 4000,
                    sidecar_ports: &[4001, 4002],
                },
                "stub --listen 127.0.0.1:4000",
            )
            .unwrap();
        let line = w.args.join(" ");
        // The state dir is hidden before the agent's own dirs come back.
        let hide = line.find("--tmpfs /home/me/.local/share/cs").unwrap();
        let data = line
            .find("--bind /home/me/.local/share/cs/agents/alice/data")
            .unwrap();
        assert!(hide < data, "{line}");
        assert!(
            line.contains(
                "--ro-bind /home/me/.local/share/cs/agents/alice/sidecar/skills /home/me/.local/share/cs/agents/alice/run/skills"
            ),
            "library skills are readable, not writable: {line}"
        );
        assert!(line.contains("--unshare-all"));
        assert!(line.contains("--proc /proc"));
        assert!(!line.contains("--share-net"));
        assert!(line.ends_with("-- /bin/sh -c exec stub --listen 127.0.0.1:4000"));
        assert_eq!(
            w.sidecar_routes,
            "serve:127.0.0.1:4000=/home/me/.local/share/cs/agents/alice/run/shared/w.sock;\
             expose:127.0.0.1:4001=/home/me/.local/share/cs/agents/alice/run/shared/s0.sock;\
             expose:127.0.0.1:4002=/home/me/.local/share/cs/agents/alice/run/shared/s1.sock"
        );
        assert_eq!(w.program, Path::new("/usr/bin/bwrap"));
    }

    #[test]
    fn a_socket_path_too_long_for_unix_sockets_is_refused() {
        let long = format!("/{}/shared", "x".repeat(120));
        let e = sandbox()
            .wrap(
                &AgentSandbox {
                    agent: "a",
                    data_dir: Path::new("/d"),
                    shared_dir: Path::new(&long),
                    skills_dir: Path::new("/s"),
                    skills_view: Path::new("/v"),
                    workload_port: 1,
                    sidecar_ports: &[],
                },
                "true",
            )
            .err()
            .unwrap();
        assert!(e.to_string().contains("CLAWSWARM_STATE_DIR"), "{e}");
    }

    #[test]
    fn a_missing_bwrap_is_refused_with_the_way_out() {
        let args = SandboxArgs {
            bwrap: Some("/nonexistent/bwrap".into()),
            ..SandboxArgs::default()
        };
        let e = Sandbox::resolve(&args, Path::new("/s"), Path::new("/b/sidecar"), &[])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("--unsandboxed") && e.contains("bubblewrap"),
            "{e}"
        );
        let off = SandboxArgs {
            unsandboxed: true,
            ..args
        };
        assert!(
            Sandbox::resolve(&off, Path::new("/s"), Path::new("/b/sidecar"), &[])
                .unwrap()
                .is_none()
        );
    }
}
