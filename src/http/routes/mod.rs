//! Thin axum handlers: each extracts, calls one domain function, answers.

pub mod admin;
pub mod extract;
pub mod health;
pub mod jobs;
pub mod status;
pub mod stop;
pub mod stops;
