//! # vigil-service
//!
//! What Vigil's three services (registrar, verifier, agent) and their clients share,
//! so each service is only its routes and its logic:
//!
//! - [`settings`]: TOML configuration files with environment overrides, one loader
//!   for every service;
//! - [`run`] and [`Signals`]: the service `main` (logging as text
//!   or JSON lines, the runtime, exit codes) and the signals that stop or refresh a
//!   service;
//! - [`notify`]: systemd's readiness protocol (`READY=1` once a service serves,
//!   `STOPPING=1` at its stop signal) for `Type=notify` units;
//! - [`server`]: the HTTP/1.1 accept loop over TCP or TLS, with [`server::Peer`]
//!   saying how each request arrived;
//! - [`reply`]: Keylime's response envelope, request bodies and query strings;
//! - [`routing`]: Keylime's 404/405 answers for axum's fallbacks and the routing
//!   helpers the services' routers use;
//! - [`client`]: the one outbound HTTP client (timeouts, a body limit, http and https,
//!   IPv6 literals, asynchronous name resolution);
//! - [`metrics`]: each service's Prometheus registry and the series they share;
//! - [`ops`]: `healthz`, `readyz` and `metrics`, served by every service to anyone;
//! - [`report`]: an error and its causes on one line, each cause once (the services'
//!   and the `vigil` command's error messages).
//!
//! TLS material and trust (certificates, rustls configurations) stay in `vigil-tls`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod metrics;
pub mod notify;
pub mod ops;
mod process;
pub mod reply;
pub mod report;
pub mod routing;
pub mod server;
pub mod settings;

pub use process::{run, subscriber, LogFormat, Runtime, Signal, Signals};
