//! # vigil-spire
//!
//! SPIRE NodeAttestor plugins that bind a SPIFFE node identity to a node Vigil attests
//! (docs/spire.md), loaded by SPIRE as external plugins:
//!
//! - `vigil-spire-agent` ([`agent`]): on the node, reads the agent's `agent/info` and an
//!   identity quote over the server's nonce from the agent's node-local unix socket;
//! - `vigil-spire-server` ([`server`]): on the SPIRE server, sends a fresh nonce, has
//!   the verifier check the quote (`POST /vigil/v1/identity/verify`, identity role) and
//!   answers the SPIFFE ID `spiffe://<trust domain>/spire/agent/vigil/<uuid>` with the
//!   node's selectors; `CanReattest`.
//!
//! The plugin protocol is hashicorp go-plugin's over gRPC ([`plugin`]): the magic
//! cookie, the handshake line on stdout, a unix socket serving the plugin's services,
//! the SDK's `Init`, `Config` and go-plugin's health and controller services. The
//! protobuf services are restated in `proto/` from spiffe/spire-plugin-sdk. [`host`] plays
//! SPIRE's side of that protocol for tests and the demo; the plugins have been tested
//! against it, not against a SPIRE server.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// gRPC refusals are `tonic::Status` (176 bytes), the type every service method returns;
// the helpers return it too, so that `?` carries it unchanged.
#![allow(clippy::result_large_err)]

pub mod agent;
pub mod hcl;
pub mod host;
pub mod local;
pub mod plugin;
pub mod server;

/// The generated protobuf types and gRPC services.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    /// SPIRE's agent-side NodeAttestor.
    pub mod agent {
        tonic::include_proto!("spire.plugin.agent.nodeattestor.v1");
    }
    /// SPIRE's server-side NodeAttestor.
    pub mod server {
        tonic::include_proto!("spire.plugin.server.nodeattestor.v1");
    }
    /// The plugin configuration service.
    pub mod config {
        tonic::include_proto!("spire.service.common.config.v1");
    }
    /// The SDK's init service.
    pub mod init {
        tonic::include_proto!("spire.service.private.init.v1");
    }
    /// gRPC health checking (go-plugin asks for `plugin`).
    pub mod health {
        tonic::include_proto!("grpc.health.v1");
    }
    /// go-plugin's controller.
    pub mod controller {
        tonic::include_proto!("plugin");
    }
}

/// What the agent side sends first: the node's UUID and quoted bank (JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Payload {
    /// The node's agent UUID.
    pub agent_uuid: String,
    /// The PCR bank its quotes use.
    pub hash_alg: String,
}

/// The server side's challenge (JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChallengeBody {
    /// The nonce the identity quote must be over.
    pub nonce: String,
}

/// The agent side's answer to a challenge (JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChallengeAnswer {
    /// The identity quote over the challenge's nonce, as the agent returns it.
    pub quote: String,
}

/// The largest payload, challenge or answer accepted from the other side.
pub const MAX_MESSAGE: usize = 64 << 10;
