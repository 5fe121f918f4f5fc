//! In-process simulator of the Huawei Cloud CPH (Cloud Phone) and IAM APIs.
//!
//! One HTTP/1.1 server (plain or HTTPS) answers both the IAM token route and
//! the CPH routes the gateway uses, with Huawei's status codes and body
//! shapes, plus a small set of `/sim/v1/...` control endpoints for tests and
//! demos. CPH calls authenticate with an IAM token (`X-Auth-Token`) or an
//! AK/SK signature (`SDK-HMAC-SHA256`). Faults (errors, throttling, latency,
//! hangs, TCP resets, IAM outages, poisoned batches, oversized and odd
//! answers, failing jobs) are injected from a seeded generator, so a given
//! seed and call sequence always misbehaves the same way.
//!
//! Projects are not configured: every 32-lowercase-hex project id exists and
//! owns [`SimOptions::phones_per_project`] seeded phones named by [`phone_id`].
//! Only phones that were stopped take memory.
//!
//! Routes:
//! - `POST /v3/auth/tokens` (IAM password auth, 201 + `X-Subject-Token`);
//! - `POST /v1/{project_id}/cloud-phone/phones/batch-stop`;
//! - `GET /v1/{project_id}/cloud-phone/jobs/{job_id}` (job query);
//! - `GET /v1/{project_id}/cloud-phone/jobs?request_ids=a,b&offset=O&limit=L`
//!   (job list: at most 20 request ids, `limit` 1..=100 default 100; a bad
//!   parameter is 400 `CPS.0004` "invalid request parameter: ...");
//! - `GET /v1/{project_id}/cloud-phone/phones/{phone_id}` (phone detail with
//!   its `status`: 2 running, 7 stopping, 8 stopped, -9 stop failed);
//! - `/sim/v1/faults` (GET, PUT), `/sim/v1/tokens/revoke`, `/sim/v1/stats`,
//!   `/sim/v1/stats/reset`, `/sim/v1/projects/{project_id}/phones[/{phone_id}]`.
//!
//! A stop moves a phone from running (or stop failed) to stopping, and after
//! [`SimOptions::job_duration`] to stopped, or to stop failed with
//! [`Faults::job_failure_rate`]. Stopping a phone that is stopping or stopped
//! gives its entry `CPS.0010` "the phone's status does not allow the
//! operation" and no job.

#![warn(missing_docs)]

mod auth;
mod control;
mod cph;
mod faults;
mod iam;
mod ids;
mod inject;
mod jobs;
mod options;
mod padding;
mod reply;
mod server;
mod sign;
mod sim;
mod state;
mod stats;
mod store;
mod tls;
mod tokens;
mod util;

#[cfg(test)]
mod tests;

pub use faults::Faults;
pub use ids::phone_id;
pub use options::{AkSkCredential, DEFAULT_AK, DEFAULT_SK, SimOptions, SimTls};
pub use sim::{Sim, run};
pub use stats::SimStats;
pub use store::PhoneState;
