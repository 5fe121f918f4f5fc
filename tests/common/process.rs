//! The real `cph-gateway serve` binary as a child process, for what only a
//! process can show: signals, exit codes, everything it writes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;

use cph_gateway::sim::Sim;

use super::{IAM_PASSWORD, JWT_SECRET, base_config, default_tenants, eventually};

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind port 0")
        .port()
}

/// A running `cph-gateway serve`; killed on drop.
pub struct GatewayProcess {
    pub child: Child,
    pub url: String,
    pub admin_url: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl GatewayProcess {
    /// Writes the default tenants file (`dir/tenants.toml`) and the test
    /// config for `sim` (`dir/gateway.toml`) and starts the binary on them;
    /// `env` adds variables, e.g. `CPHGW__…` overrides.
    pub async fn start_against(sim: &Sim, dir: &Path, env: &[(&str, &str)]) -> Self {
        let tenants = dir.join("tenants.toml");
        std::fs::write(&tenants, default_tenants()).expect("write tenants");
        let config = dir.join("gateway.toml");
        std::fs::write(
            &config,
            base_config(&sim.url(), &tenants.display().to_string()),
        )
        .expect("write config");
        Self::start(&config, dir, env).await
    }

    /// Starts `serve --config config` on free ports, with only the test
    /// secrets and `env` in its environment, output into files in
    /// `out_dir`, and waits until `/healthz` answers.
    pub async fn start(config: &Path, out_dir: &Path, env: &[(&str, &str)]) -> Self {
        let (port, admin_port) = (free_port(), free_port());
        let stdout = out_dir.join("gateway.stdout");
        let stderr = out_dir.join("gateway.stderr");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cph-gateway"));
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .env_clear()
            .env("TEST_JWT_SECRET", JWT_SECRET)
            .env("TEST_IAM_PASSWORD", IAM_PASSWORD)
            .env("CPHGW__SERVER__LISTEN", format!("\"127.0.0.1:{port}\""))
            .env(
                "CPHGW__SERVER__ADMIN_LISTEN",
                format!("\"127.0.0.1:{admin_port}\""),
            )
            .env("CPHGW__LIMITS__TENANT_RATE_PER_S", "100000")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("the gateway binary starts");
        let mut gw = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            admin_url: format!("http://127.0.0.1:{admin_port}"),
            stdout,
            stderr,
        };
        let client = reqwest::Client::new();
        let healthz = format!("{}/healthz", gw.admin_url);
        let up = eventually(Duration::from_secs(15), async || {
            client
                .get(&healthz)
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        })
        .await;
        if !up {
            let status = gw.child.try_wait();
            panic!(
                "the gateway binary did not become healthy ({status:?}):\n{}",
                gw.output()
            );
        }
        gw
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Sends `sig` (e.g. "HUP", "TERM") with `kill`.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// What the process logged (stderr).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Everything the process wrote, stdout then stderr.
    pub fn output(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("{}{}", read(&self.stdout), read(&self.stderr))
    }

    /// Sends SIGTERM and asserts a clean exit (status 0) within 10 s.
    pub async fn terminate(&mut self) {
        self.signal("TERM");
        let mut exit = None;
        let exited = eventually(Duration::from_secs(10), async || {
            exit = self.child.try_wait().expect("try_wait");
            exit.is_some()
        })
        .await;
        assert!(exited, "the gateway did not exit on SIGTERM");
        assert!(
            exit.is_some_and(|s| s.success()),
            "exit status {exit:?}:\n{}",
            self.output()
        );
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
