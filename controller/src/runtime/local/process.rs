//! Local processes: start, adopt after a controller restart, watch, stop.
//!
//! Each process runs in its own process group so a terminal's Ctrl-C or the
//! controller's death does not take agents down with it; the controller
//! stops them itself on shutdown, and a restarted controller adopts the ones
//! still running (pid file + start time, so a recycled pid is not mistaken
//! for ours).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::process::{Child, Command};
use tracing::{debug, warn};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What to run.
pub struct Launch<'a> {
    pub name: &'static str,
    pub program: &'a Path,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: &'a Path,
    pub log_file: PathBuf,
    pub pid_file: PathBuf,
    /// Start from an empty environment (plus [`INHERITED_ENV`]) instead of
    /// the controller's: workloads must not see the controller's secrets.
    pub clean_env: bool,
}

/// What a workload started with a clean environment still inherits:
/// enough to find programs and behave (locale, temp dir), plus the
/// workload's own `OPENCLAW_*` settings.
pub const INHERITED_ENV: &[&str] = &["PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR"];
const INHERITED_PREFIXES: &[&str] = &["OPENCLAW_"];

/// A process we started or adopted.
pub struct Proc {
    pub name: &'static str,
    pub pid: i32,
    start_time: u64,
    /// Present when we started it (we must reap it); absent when adopted.
    child: Option<Child>,
    /// How it ended, once reaped (only for our own children).
    exit: Option<std::process::ExitStatus>,
    pid_file: PathBuf,
    log_file: PathBuf,
}

impl Proc {
    pub fn spawn(l: Launch<'_>) -> Result<Self, ProcessError> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&l.log_file)
            .map_err(|source| ProcessError::Io {
                path: l.log_file.clone(),
                source,
            })?;
        let log_err = log.try_clone().map_err(|source| ProcessError::Io {
            path: l.log_file.clone(),
            source,
        })?;
        let mut cmd = Command::new(l.program);
        if l.clean_env {
            cmd.env_clear();
            for (k, v) in std::env::vars_os() {
                let key = k.to_string_lossy();
                if INHERITED_ENV.contains(&key.as_ref())
                    || INHERITED_PREFIXES.iter().any(|p| key.starts_with(p))
                {
                    cmd.env(&k, v);
                }
            }
        }
        cmd.args(&l.args)
            .envs(l.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(l.cwd)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(false);
        let child = cmd.spawn().map_err(|source| ProcessError::Spawn {
            what: format!("{} ({})", l.name, l.program.display()),
            source,
        })?;
        let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        let start_time = proc_start_time(pid).unwrap_or(0);
        let record = format!("{pid} {start_time}\n");
        write_atomic(&l.pid_file, record.as_bytes())?;
        debug!(process = l.name, pid, "process started");
        Ok(Self {
            name: l.name,
            pid,
            start_time,
            child: Some(child),
            exit: None,
            pid_file: l.pid_file,
            log_file: l.log_file,
        })
    }

    /// The process recorded in `pid_file`, if it is still the same one and alive.
    pub fn adopt(name: &'static str, pid_file: &Path, log_file: &Path) -> Option<Self> {
        let text = fs::read_to_string(pid_file).ok()?;
        let mut it = text.split_whitespace();
        let pid: i32 = it.next()?.parse().ok()?;
        let start_time: u64 = it.next()?.parse().ok()?;
        if pid <= 0 || proc_start_time(pid)? != start_time || is_zombie(pid) {
            return None;
        }
        Some(Self {
            name,
            pid,
            start_time,
            child: None,
            exit: None,
            pid_file: pid_file.to_owned(),
            log_file: log_file.to_owned(),
        })
    }

    #[cfg(test)]
    pub fn adopted(&self) -> bool {
        self.child.is_none()
    }

    /// Whether it is still running (reaps our own children).
    pub fn alive(&mut self) -> bool {
        if self.exit.is_some() {
            return false;
        }
        match &mut self.child {
            Some(child) => match child.try_wait() {
                Ok(None) => true,
                Ok(Some(status)) => {
                    self.exit = Some(status);
                    false
                }
                Err(_) => false,
            },
            None => proc_start_time(self.pid) == Some(self.start_time) && !is_zombie(self.pid),
        }
    }

    /// How a dead process ended, for the agent's detail: its exit status
    /// and the last line it wrote, which is where a program that cannot
    /// start says why ("Error: Cannot find module", "bwrap: ...").
    pub fn death_note(&self) -> String {
        use std::os::unix::process::ExitStatusExt;
        let how = match self.exit {
            Some(s) => match (s.code(), s.signal()) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(sig)) => format!("was killed by signal {sig}"),
                _ => "ended".to_owned(),
            },
            None => "is gone".to_owned(),
        };
        match last_log_line(&self.log_file) {
            Some(line) => format!("{how}: {line}"),
            None => how,
        }
    }

    /// Whether the pid file still names this process.
    fn recorded_here(&self) -> bool {
        let Ok(text) = fs::read_to_string(&self.pid_file) else {
            return false;
        };
        let mut it = text.split_whitespace();
        it.next().and_then(|p| p.parse::<i32>().ok()) == Some(self.pid)
            && it.next().and_then(|t| t.parse::<u64>().ok()) == Some(self.start_time)
    }

    /// SIGTERM the process group, then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        let pgid = Pid::from_raw(self.pid);
        // The whole group, not just its leader: a sandbox's monitor can exit
        // on SIGTERM while the sandbox (and the workload in it) runs on.
        let running = |p: &mut Self| p.alive() || (p.pid > 0 && group_has_members(p.pid));
        if running(&mut self) {
            let _ = killpg(pgid, Signal::SIGTERM);
            let deadline = tokio::time::Instant::now() + grace;
            while running(&mut self) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if running(&mut self) {
                warn!(
                    process = self.name,
                    pid = self.pid,
                    "did not stop in time; killing its process group"
                );
                let _ = killpg(pgid, Signal::SIGKILL);
            }
        }
        if let Some(child) = &mut self.child {
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        }
        // SIGKILL is delivered asynchronously: a member of a busy machine's
        // group can still be running for a moment after the leader is
        // reaped. The group is gone when this returns (or 2 s have passed).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.pid > 0 && group_has_members(self.pid) && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Only our own record: an agent suspended and woken at once has a
        // new process recorded here by now, and removing its record would
        // orphan it (no later stop, adoption or cleanup could find it).
        if self.recorded_here() {
            let _ = fs::remove_file(&self.pid_file);
        }
    }

    /// After the process itself died: SIGKILL what is left in its group (a
    /// sandbox whose monitor was killed, a shell's children), so a restart
    /// never runs two workloads side by side. The group is checked for
    /// members first: a pid number is not reused while a group still
    /// holds it, so only our leftovers can be hit.
    pub fn kill_leftovers(&self) {
        if self.pid > 0 && group_has_members(self.pid) {
            warn!(
                process = self.name,
                pgid = self.pid,
                "killing what the dead process left behind"
            );
            let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }
}

/// The fields of `/proc/PID/stat` from the state on (field 3). The command
/// name before them may contain spaces and parentheses; fields resume after
/// the last `)`.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Whether any live process has process group `pgid` (field 5).
fn group_has_members(pgid: i32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        e.file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
            .and_then(stat_fields)
            .is_some_and(|f| {
                f.first().is_some_and(|s| s != "Z")
                    && f.get(2).and_then(|g| g.parse().ok()) == Some(pgid)
            })
    })
}

/// Process start time in clock ticks since boot (field 22).
fn proc_start_time(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

fn is_zombie(pid: i32) -> bool {
    stat_fields(pid).is_none_or(|f| f.first().is_none_or(|s| s == "Z"))
}

/// Write via a temporary file and rename, so readers never see half a file.
/// The last non-empty line of a log, read from its tail only and bounded,
/// so a huge or binary log costs little and shows as text.
fn last_log_line(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 4096;
    const MAX_CHARS: usize = 300;
    let mut f = fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut buf = Vec::new();
    f.take(TAIL).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    Some(match line.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    })
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ProcessError> {
    let tmp = path.with_extension("tmp");
    let io = |source| ProcessError::Io {
        path: path.to_owned(),
        source,
    };
    fs::write(&tmp, bytes).map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

/// A free loopback port, for a workload that needs one chosen for it.
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch<'a>(dir: &'a Path, program: &'a Path, args: &[&str]) -> Launch<'a> {
        Launch {
            name: "test",
            program,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            cwd: dir,
            log_file: dir.join("log"),
            pid_file: dir.join("pid"),
            clean_env: false,
        }
    }

    #[tokio::test]
    async fn a_started_process_is_adoptable_until_it_stops() {
        let dir = tempfile::tempdir().unwrap();
        let sleep = PathBuf::from("/bin/sleep");
        let mut p = Proc::spawn(launch(dir.path(), &sleep, &["30"])).unwrap();
        assert!(p.alive());
        let mut adopted = Proc::adopt("test", &dir.path().join("pid"), &dir.path().join("log"))
            .expect("adoptable");
        assert!(adopted.adopted() && adopted.alive());
        p.stop(Duration::from_secs(2)).await;
        assert!(!adopted.alive());
        assert!(Proc::adopt("test", &dir.path().join("pid"), &dir.path().join("log")).is_none());
    }

    #[tokio::test]
    async fn a_pid_file_naming_another_process_is_not_adopted() {
        let dir = tempfile::tempdir().unwrap();
        // pid 1 is alive but started at a different time than recorded.
        fs::write(dir.path().join("pid"), "1 12345\n").unwrap();
        assert!(Proc::adopt("test", &dir.path().join("pid"), &dir.path().join("log")).is_none());
        fs::write(dir.path().join("pid"), "garbage").unwrap();
        assert!(Proc::adopt("test", &dir.path().join("pid"), &dir.path().join("log")).is_none());
    }

    /// Suspend and wake at once: the old process's stop must not remove
    /// the record of the new one (which then outlived every cleanup).
    #[tokio::test]
    async fn stopping_an_old_process_keeps_its_successors_pid_file() {
        let dir = tempfile::tempdir().unwrap();
        let sleep = PathBuf::from("/bin/sleep");
        let old = Proc::spawn(launch(dir.path(), &sleep, &["30"])).unwrap();
        let new = Proc::spawn(launch(dir.path(), &sleep, &["30"])).unwrap();
        old.stop(Duration::from_secs(2)).await;
        let mut adopted = Proc::adopt("test", &dir.path().join("pid"), &dir.path().join("log"))
            .expect("the successor is still recorded");
        assert_eq!(adopted.pid, new.pid);
        assert!(adopted.alive());
        new.stop(Duration::from_secs(2)).await;
        assert!(!dir.path().join("pid").exists(), "its own record goes");
    }

    /// As a sandbox's monitor exits on SIGTERM and leaves its init (which
    /// ignores it) running with the workload inside.
    #[tokio::test]
    async fn stopping_a_process_ends_its_whole_group_even_what_ignores_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let sh = PathBuf::from("/bin/sh");
        let script = "(trap '' TERM; exec sleep 300) & echo $! > member; wait";
        let p = Proc::spawn(launch(dir.path(), &sh, &["-c", script])).unwrap();
        let member_file = dir.path().join("member");
        let mut member = None;
        for _ in 0..100 {
            member = fs::read_to_string(&member_file)
                .ok()
                .and_then(|m| m.trim().parse::<i32>().ok());
            if member.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let member = member.expect("the group member started");
        let pgid = p.pid;
        p.stop(Duration::from_millis(500)).await;
        assert!(
            !group_has_members(pgid),
            "process {member} of the stopped group is still running"
        );
    }

    #[tokio::test]
    async fn a_process_that_exits_is_seen_dead() {
        let dir = tempfile::tempdir().unwrap();
        let t = PathBuf::from("/bin/true");
        let mut p = Proc::spawn(launch(dir.path(), &t, &[])).unwrap();
        for _ in 0..100 {
            if !p.alive() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("/bin/true still alive after 2 s");
    }
}
