//! The integration tests, one binary: a real simulator (`cph-sim`) and a
//! real gateway per test, both on loopback, or the real `cph-gateway`
//! binary as a child process where only a process can show the behaviour.
//!
//! One module per area; the harness is in [`helpers`]. Run one area with
//! e.g. `cargo nextest run --test it admin::`.

mod helpers;

mod admin;
mod aksk;
mod auth;
mod callers;
mod check_config;
mod check_online;
mod connections;
mod demo;
mod faults;
mod hostile;
mod jwks;
mod listener_tls;
mod logs;
mod ops;
mod overload;
mod plan_props;
mod poison;
mod rotation;
mod security;
mod shutdown;
mod smoke;
mod soak;
mod status;
mod stop;
mod store;
mod tenants_file;
mod tokens;
mod upstream_bounds;
mod upstream_tls;
