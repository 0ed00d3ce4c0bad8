//! Quote verification throughput: parse the quote string, RSA-2048 signature, nonce and
//! PCR digest, on Keylime's verified vector (`test-data/files/quote*.out`).
//!
//! `cargo bench -p vigil-core --bench quote`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigil_core::tpm::quote::{AkPublicKey, KeylimeQuote, QuoteVerifier};
use vigil_core::HashAlg;

const FILES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/keylime/test-data/files/"
);

fn file(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FILES}{name}")).expect("shared test data (../shared/testdata)")
}

fn quote(c: &mut Criterion) {
    let text = KeylimeQuote {
        attest: file("quote.out"),
        signature: file("quotesig.out"),
        pcr_blob: file("quotepcr.out"),
    }
    .to_keylime_string();
    let nonce = file("rand.out");
    let verifier = QuoteVerifier::new(AkPublicKey::from_spki(&file("akpub.pem")).unwrap());
    let mut g = c.benchmark_group("quote");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_rsa2048_sha256", |b| {
        b.iter(|| {
            let q = KeylimeQuote::parse(&text).unwrap();
            verifier.verify(&q, &nonce, HashAlg::Sha256).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, quote);
criterion_main!(benches);
