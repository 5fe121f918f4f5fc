//! The server side: the state handlers run on, the routers, middleware,
//! handlers, error rendering, the API document, and the listeners.

pub mod admission;
pub mod conn;
pub mod error;
pub mod listener;
pub mod middleware;
pub mod openapi;
pub mod router;
pub mod routes;
pub mod server;
pub mod shards;
pub mod state;
pub mod tls;
