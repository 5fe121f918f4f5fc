//! cph-gateway: lets internal services stop Huawei Cloud Phones (CPH) through
//! one endpoint. A request flows through the modules in this order:
//!
//! `auth` (JWT → caller) → `tenants` (tenant → project) → `plan` (validate,
//! dedupe, split) → `fanout` (bounded concurrency, retries, `iam` tokens,
//! `cph` client) → `plan::merge` (one entry per phone, in request order).

pub mod app;
pub mod auth;
pub mod config;
pub mod cph;
pub mod domain;
pub mod error;
pub mod fanout;
pub mod iam;
pub mod middleware;
pub mod openapi;
pub mod plan;
pub mod routes;
pub mod sim;
pub mod telemetry;
pub mod tenants;

pub use app::{App, AppState, RunningApp, StartError};
pub use config::Config;
