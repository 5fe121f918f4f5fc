//! The real `cph-gateway serve` binary as a child process, for what only a
//! process can show: signals, exit codes, everything it writes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cph_sim::Sim;
use reqwest::StatusCode;

use super::{eventually, secret_env, write_config};

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind port 0")
        .port()
}

/// A running `cph-gateway serve`; killed on drop (and its output printed
/// if the test is failing).
pub struct GatewayProcess {
    pub child: Child,
    /// `http://127.0.0.1:PORT` of the caller API.
    pub url: String,
    /// `http://127.0.0.1:PORT` of the admin API.
    pub admin_url: String,
    pub port: u16,
    pub admin_port: u16,
    /// Holds the config, the tenants file and the output files.
    dir: tempfile::TempDir,
}

impl GatewayProcess {
    /// Writes the default tenants file and the test config for `sim` into a
    /// new temporary directory and starts `serve --config` on them on free
    /// ports, with only the test secrets and `env` (e.g. `CPHGW__…`
    /// overrides) in its environment; waits until `/readyz` answers 200.
    pub async fn start_against(sim: &Sim, env: &[(&str, &str)]) -> Self {
        Self::start_limited(sim, env, None).await
    }

    /// Like [`GatewayProcess::start_against`], with the process's file
    /// descriptor limit (soft and hard) set to `fd_limit` when given.
    pub async fn start_limited(sim: &Sim, env: &[(&str, &str)], fd_limit: Option<u32>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = write_config(dir.path(), &sim.url());
        let (port, admin_port) = (free_port(), free_port());
        let binary = env!("CARGO_BIN_EXE_cph-gateway");
        let mut cmd = match fd_limit {
            // `exec` keeps the pid: the child is the gateway itself.
            Some(n) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(binary);
                c
            }
            None => Command::new(binary),
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .env_clear()
            .envs(secret_env())
            .env("CPHGW__SERVER__LISTEN", format!("\"127.0.0.1:{port}\""))
            .env(
                "CPHGW__SERVER__ADMIN_LISTEN",
                format!("\"127.0.0.1:{admin_port}\""),
            )
            .env("CPHGW__LIMITS__TENANT_RATE_PER_S", "100000")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("gateway.stdout")).expect("stdout file"))
            .stderr(std::fs::File::create(dir.path().join("gateway.stderr")).expect("stderr file"));
        let child = cmd.spawn().expect("the gateway binary starts");
        let mut gw = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            admin_url: format!("http://127.0.0.1:{admin_port}"),
            port,
            admin_port,
            dir,
        };
        let client = super::client();
        let readyz = format!("{}/readyz", gw.admin_url);
        let ready = eventually(Duration::from_secs(15), async || {
            client
                .get(&readyz)
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        })
        .await;
        if !ready {
            let status = gw.child.try_wait();
            panic!(
                "the gateway binary did not become ready ({status:?}):\n{}",
                gw.output()
            );
        }
        gw
    }

    /// The process's resident memory (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// The file descriptors the process has open.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The names of the process's threads (Linux: `/proc/PID/task/*/comm`).
    pub fn thread_names(&self) -> Vec<String> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.child.id())) else {
            return Vec::new();
        };
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|name| name.trim_end().to_owned())
            .collect()
    }

    /// The tenants file the process serves.
    pub fn tenants_file(&self) -> PathBuf {
        self.dir.path().join("tenants.toml")
    }

    /// Sends `sig` (e.g. "HUP", "TERM") with `kill`.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// What the process logged (stderr).
    pub fn logs(&self) -> String {
        read(&self.dir.path().join("gateway.stderr"))
    }

    /// Everything the process wrote, stdout then stderr.
    pub fn output(&self) -> String {
        format!(
            "{}{}",
            read(&self.dir.path().join("gateway.stdout")),
            self.logs()
        )
    }

    /// Waits for the process to exit, at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends SIGTERM and asserts a clean exit (status 0) within 10 s.
    pub async fn terminate(&mut self) {
        self.signal("TERM");
        let exit = self.wait_exit(Duration::from_secs(10)).await;
        assert!(exit.is_some(), "the gateway did not exit on SIGTERM");
        assert!(
            exit.is_some_and(|s| s.success()),
            "exit status {exit:?}:\n{}",
            self.output()
        );
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- gateway output ---\n{}", self.output());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
