//! cph-gateway: lets internal services stop Huawei Cloud Phones (CPH) through
//! one endpoint. The modules, in the order a request meets them:
//!
//! - [`http`]: listeners, middleware, routes (the caller and admin APIs);
//! - [`auth`]: the caller's JWT becomes a `Caller`;
//! - [`tenants`]: the caller's tenant becomes a `Project`;
//! - [`stop`]: plan (parse, dedupe, split), fan-out, merge;
//! - [`upstream`]: IAM tokens and the CPH client;
//!
//! below them all [`domain`] (validated ids, the contract's error codes) and
//! [`config`]; beside them [`telemetry`] (logs and metrics).

pub mod auth;
pub mod config;
pub mod domain;
pub mod http;
pub mod stop;
pub mod store;
pub mod telemetry;
pub mod tenants;
pub mod upstream;

pub use config::Config;
pub use http::server::{App, RunningApp, shutdown_signal};
pub use http::state::{AppState, StartError};
