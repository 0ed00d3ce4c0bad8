//! The Keylime harness itself: Keylime's registrar and verifier start on free ports with
//! the shared `cv_ca`, `keylime_tenant` reaches both over mTLS, and dropping the
//! services kills their whole process groups.

#![cfg(feature = "keylime")]

use std::net::{Ipv4Addr, TcpStream};

use vigil_testkit::keylime::KeylimeEnv;

#[test]
fn registrar_verifier_and_tenant() {
    let Some(env) = KeylimeEnv::new("registrar_verifier_and_tenant") else {
        return;
    };
    let registrar = env.registrar(&[]);
    let verifier = env.verifier(registrar.tls_port(), &[]);

    let run = env.tenant(registrar.tls_port(), verifier.port(), &["-c", "reglist"]);
    assert!(run.success, "reglist:\n{}", run.log);
    assert_eq!(
        run.response().expect("reglist response")["results"]["uuids"],
        serde_json::json!([])
    );
    let run = env.tenant(registrar.tls_port(), verifier.port(), &["-c", "cvlist"]);
    assert!(run.success, "cvlist:\n{}", run.log);

    let ports = [registrar.port(), registrar.tls_port(), verifier.port()];
    drop(verifier);
    drop(registrar);
    for port in ports {
        assert!(
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err(),
            "port {port} still answers after the service was dropped"
        );
    }
}
