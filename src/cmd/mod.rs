//! One module per command of the `cph-gateway` binary.

pub mod check;
pub mod demo;
pub mod serve;
pub mod sim;
pub mod store;
pub mod token;
