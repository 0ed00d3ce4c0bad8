//! Every node behind one listening socket: the socket is bound to the wildcard address
//! on one port, each node has its own loopback address (127.b.c.d), and an accepted
//! connection's local address says which node was dialled. So 10,000 nodes need one
//! socket, and a verifier reaches each at its own `ip:port` as it would a real node.
//! Connections from anything but loopback are dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use crate::material::Material;
use crate::node::{node_index, Node};
use crate::stats::Stats;

/// What every connection shares.
pub(crate) struct Fleet {
    pub(crate) nodes: Vec<Node>,
    pub(crate) material: Material,
    pub(crate) stats: Stats,
    pub(crate) started: Instant,
}

/// Binds `0.0.0.0:port` and serves every node until the returned task is aborted.
pub(crate) async fn serve(fleet: Arc<Fleet>, port: u16) -> Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(("0.0.0.0", port))
        .await
        .with_context(|| format!("binding 0.0.0.0:{port}"))?;
    Ok(tokio::spawn(async move {
        // The connections die with the server.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            while connections.try_join_next().is_some() {}
            let fleet = fleet.clone();
            connections.spawn(async move {
                let node = match (peer.ip().is_loopback(), tcp.local_addr()) {
                    (true, Ok(SocketAddr::V4(local))) => node_index(*local.ip()),
                    _ => None,
                };
                let Some(index) = node.filter(|&i| i < fleet.nodes.len()) else {
                    return;
                };
                let node = &fleet.nodes[index];
                if node.faults().unreachable {
                    return;
                }
                let _ = tcp.set_nodelay(true);
                let acceptor = tokio_rustls::TlsAcceptor::from(node.tls.clone());
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    let fleet = fleet.clone();
                    async move { Ok::<_, Infallible>(handle(&fleet, index, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }))
}

fn query<'a>(req: &'a hyper::Request<hyper::body::Incoming>, key: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then_some(v)
    })
}

fn reply(code: u16, body: Bytes) -> hyper::Response<Full<Bytes>> {
    let mut res = hyper::Response::new(Full::new(body));
    *res.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::OK);
    res.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    res
}

fn json_reply(code: u16, results: serde_json::Value) -> hyper::Response<Full<Bytes>> {
    let status = if code == 200 { "Success" } else { "Error" };
    reply(
        code,
        Bytes::from(json!({"code": code, "status": status, "results": results}).to_string()),
    )
}

async fn handle(
    fleet: &Fleet,
    index: usize,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let node = &fleet.nodes[index];
    let path = req.uri().path();
    if path == "/version" {
        return json_reply(
            200,
            json!({"supported_version": "2.2", "supported_versions": ["2.1", "2.2"]}),
        );
    }
    if path.ends_with("/quotes/integrity") {
        let nonce = query(&req, "nonce").unwrap_or_default();
        fleet.stats.request(index, fleet.started, nonce);
        let delay = node.faults().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mask = query(&req, "mask")
            .and_then(|m| u32::from_str_radix(m.trim_start_matches("0x"), 16).ok())
            .unwrap_or(0);
        let partial = query(&req, "partial") == Some("1");
        let from = query(&req, "ima_ml_entry")
            .and_then(|e| e.parse().ok())
            .unwrap_or(0);
        return match node.integrity(&fleet.material, nonce, mask, partial, from, fleet.started) {
            Ok(body) => reply(200, body),
            Err(e) => json_reply(500, json!({"error": e.to_string()})),
        };
    }
    // V and revocation notices are accepted and dropped: the simulation has no payload.
    if path.ends_with("/keys/vkey") || path.ends_with("/notifications/revocation") {
        return json_reply(200, json!({}));
    }
    json_reply(404, json!({}))
}
