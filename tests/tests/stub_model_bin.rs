//! The `clawswarm-stub-model` binary as a harness starts it: flags, port file, log file, signals.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clawswarm_tests::stub_model::{LoggedRequest, Outcome};

/// Kills the child if a test fails half-way, so no stub outlives the test run.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && !s.is_empty()
        {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn binary_writes_port_file_serves_logs_and_exits_on_sigterm() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let port_file = dir.path().join("port");
    let log = dir.path().join("calls.jsonl");
    let child = Command::new(env!("CARGO_BIN_EXE_clawswarm-stub-model"))
        .args(["--listen", "127.0.0.1:0", "--ready-after-ms", "100"])
        .args(["--chunk-delay-ms", "1", "--api-key", "k"])
        .arg("--port-file")
        .arg(&port_file)
        .arg("--log")
        .arg(&log)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn stub binary");
    let mut child = Guard(child);
    let port: u16 = wait_for_file(&port_file).parse().expect("port number");
    let mut line = String::new();
    let stdout = child.0.stdout.take().expect("stdout");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("stdout line");
    assert_eq!(line.trim(), format!("listening on 127.0.0.1:{port}"));

    let c = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while c
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unauth = c
        .post(format!("{base}/v1/responses"))
        .json(&serde_json::json!({"model": "m", "input": "x"}))
        .send()
        .await
        .expect("send");
    assert_eq!(unauth.status(), 401);
    let body = c
        .post(format!("{base}/v1/responses"))
        .bearer_auth("k")
        .json(&serde_json::json!({"model": "m", "input": "hello [chunks=2]", "stream": true}))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("body");
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");

    let lines: Vec<LoggedRequest> = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("log line"))
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!((lines[0].outcome, lines[0].chunks), (Outcome::Ok, 2));

    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "stub did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}
