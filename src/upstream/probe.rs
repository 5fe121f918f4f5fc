//! Online checks of credentials (`check-config --online`): one real call
//! per credential, its outcome said in one line.

use std::sync::Arc;

use tokio::time::Instant;

use super::Upstream;
use super::cph::CallOutcome;
use crate::tenants::Project;

/// A request id that no batch-stop answered: the job list of it is empty.
const PROBE_REQUEST_ID: &str = "00000000000000000000000000000000";

impl Upstream {
    /// A signed call with the AK/SK credential of `project`: CPH's job list
    /// for a request id no stop has, which CPH answers with an empty list
    /// when it accepts the signature. `Ok` says what CPH answered, `Err` why
    /// the credential (or the way to CPH) does not work.
    pub async fn probe_signed(&self, project: &Arc<Project>) -> Result<String, String> {
        let deadline = Instant::now() + self.cfg.timeout;
        let answer = self
            .credentials
            .call(project, deadline, |auth| async move {
                self.cph
                    .list_jobs(
                        project,
                        &auth,
                        "cph-gateway-check-config",
                        &[PROBE_REQUEST_ID],
                        0,
                        1,
                    )
                    .await
            })
            .await
            .map_err(|e| e.to_string())?;
        match answer {
            Ok((status, _)) if status.is_success() => Ok(format!(
                "CPH accepted a signed job list call (HTTP {})",
                status.as_u16()
            )),
            Ok((status, body)) => {
                let err: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let code = err["error_code"].as_str().unwrap_or("no error code");
                let msg = err["error_msg"].as_str().unwrap_or("");
                let what = match status.as_u16() {
                    401 => "CPH refused the signature",
                    403 => "CPH refused the credential access to the project",
                    _ => "CPH refused the signed call",
                };
                Err(format!(
                    "{what}: HTTP {} {code} {}",
                    status.as_u16(),
                    msg.chars().take(200).collect::<String>()
                )
                .trim_end()
                .to_owned())
            }
            Err(CallOutcome::Timeout) => Err(format!(
                "CPH did not answer within {} ms",
                self.cfg.timeout.as_millis()
            )),
            Err(CallOutcome::NotSent(reason) | CallOutcome::Broken(reason)) => {
                Err(format!("CPH unreachable: {reason}"))
            }
            Err(other) => Err(format!("CPH call failed: {}", other.label())),
        }
    }
}
