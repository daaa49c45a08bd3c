//! The local runtime with real (tiny) processes: per-agent template values
//! reach the workload and the sidecar, and survive a controller restart.

use std::{os::unix::fs::PermissionsExt, path::Path, time::Duration};

use super::*;
use crate::runtime::AgentSpec;

fn config(state: &Path, sidecar_bin: &Path) -> LocalConfig {
    let parse = |s: &str| Template::parse("test", s).unwrap();
    LocalConfig {
        state_dir: state.to_owned(),
        namespace: "local".into(),
        sidecar_bin: sidecar_bin.to_owned(),
        sidecar_env: vec![],
        sidecar_env_template: EnvTemplate::parse("test", "S={secret:shared};P={port:extra}")
            .unwrap(),
        workload: Some(WorkloadLaunch {
            command: parse(
                "sh -c 'echo {port} {port:extra} $W {run_dir} {agent} > {data_dir}/workload.txt; exec sleep 30'",
            ),
            url: parse("http://127.0.0.1:{port}"),
            env: EnvTemplate::parse("test", "W={secret:shared}").unwrap(),
        }),
        sandbox: None,
        supervise_interval: Duration::from_millis(50),
        restart_backoff_max: Duration::from_secs(1),
        stop_grace: Duration::from_secs(2),
        idle_timeout: None,
        manage_processes: true,
    }
}

async fn read_when_written(path: &Path) -> String {
    for _ in 0..200 {
        if let Ok(s) = std::fs::read_to_string(path)
            && s.ends_with('\n')
        {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{} never written", path.display());
}

async fn stop(rt: &LocalRuntime) {
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    rt.run(shutdown).await.unwrap();
}

#[tokio::test]
async fn workload_and_sidecar_share_values_that_survive_a_restarted_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let sidecar = dir.path().join("fake-sidecar");
    std::fs::write(
        &sidecar,
        "#!/bin/sh\necho \"$S $P $CLAWSWARM_WORKLOAD_URL\" > \"$CLAWSWARM_DATA_DIR/sidecar.txt\"\nexec sleep 30\n",
    )
    .unwrap();
    std::fs::set_permissions(&sidecar, std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    let id = AgentId::new("local", "alice").unwrap();
    let data = state.join("agents/alice/data");
    let sidecar_dir = state.join("agents/alice/sidecar");

    let rt = LocalRuntime::open(config(&state, &sidecar), Metrics::new()).unwrap();
    rt.provision(AgentSpec {
        id: id.clone(),
        owner: "U1".into(),
        template: String::new(),
    })
    .await
    .unwrap();
    let workload = read_when_written(&data.join("workload.txt")).await;
    let side = read_when_written(&sidecar_dir.join("sidecar.txt")).await;
    let w: Vec<&str> = workload.split_whitespace().collect();
    let s: Vec<&str> = side.split_whitespace().collect();
    let (port, extra, secret) = (w[0], w[1], w[2]);
    assert_ne!(port, extra, "{workload}");
    assert_eq!(secret.len(), 64);
    assert_eq!(w[3], state.join("agents/alice/run").display().to_string());
    assert_eq!(w[4], "alice");
    assert_eq!(s, [secret, extra, &format!("http://127.0.0.1:{port}")]);

    // A new controller over the same state adopts the processes; restarting
    // the agent renders the same values again.
    drop(rt);
    std::fs::remove_file(data.join("workload.txt")).unwrap();
    std::fs::remove_file(sidecar_dir.join("sidecar.txt")).unwrap();
    let rt = LocalRuntime::open(config(&state, &sidecar), Metrics::new()).unwrap();
    rt.restart(&id).await.unwrap();
    assert_eq!(
        read_when_written(&data.join("workload.txt")).await,
        workload
    );
    assert_eq!(
        read_when_written(&sidecar_dir.join("sidecar.txt")).await,
        side
    );
    stop(&rt).await;
}
