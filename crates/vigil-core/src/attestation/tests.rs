//! Every transition of compat §6.2 and each rule of the engine, with time passed in.

use std::sync::Arc;
use std::time::Duration;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::*;
use crate::failure::{Component, Event, Failure};
use crate::hash::HashAlg;
use crate::ima::ImaAttestState;
use crate::tpm::attest::ClockInfo;

use OperationalState as S;

fn t(secs: u64) -> UnixTime {
    UnixTime::from_secs(secs)
}

fn cfg() -> Arc<AttestationConfig> {
    Arc::new(AttestationConfig::default())
}

/// Events at `warning` for `ima.*`, `error` for `pcr_validation.*`, the rest at the top.
fn graded() -> SeverityConfig {
    let labels = super::severity::DEFAULT_LABELS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let rules = [
        SeverityRule {
            event_id: r"ima\..*".into(),
            severity_label: "warning".into(),
        },
        SeverityRule {
            event_id: r"pcr_validation\..*".into(),
            severity_label: "error".into(),
        },
        SeverityRule {
            event_id: ".*".into(),
            severity_label: "emergency".into(),
        },
    ];
    SeverityConfig::new(labels, &rules).unwrap()
}

fn cfg_with(f: impl FnOnce(&mut AttestationConfig)) -> Arc<AttestationConfig> {
    let mut c = AttestationConfig::default();
    f(&mut c);
    Arc::new(c)
}

fn event(component: Component, subs: &[&str], name: &str, recoverable: bool) -> Event {
    Event::new(component, subs, name, Event::message(name), recoverable)
}

fn failure(events: Vec<Event>) -> Failure {
    let mut f = Failure::new();
    for e in events {
        f.push(e);
    }
    f
}

fn ima_fail() -> Failure {
    failure(vec![event(
        Component::Ima,
        &["validation", "ima-ng"],
        "not_in_allowlist",
        true,
    )])
}

fn pcr_fail() -> Failure {
    failure(vec![event(
        Component::PcrValidation,
        &[],
        "invalid_pcr_0",
        true,
    )])
}

fn drain(node: &mut NodeAttestation, now: UnixTime) -> Vec<Action> {
    std::iter::from_fn(|| node.poll_action(now)).collect()
}

/// Polls and expects exactly one quote request.
fn quote(node: &mut NodeAttestation, now: UnixTime) -> (RequestId, bool, u64) {
    match drain(node, now).as_slice() {
        [Action::GetQuote {
            id,
            partial,
            ima_ml_entry,
        }] => (*id, *partial, *ima_ml_entry),
        other => panic!("expected one GetQuote at {now:?}, got {other:?}"),
    }
}

fn provide_v(node: &mut NodeAttestation, now: UnixTime) -> RequestId {
    match drain(node, now).as_slice() {
        [Action::ProvideV { id }] => *id,
        other => panic!("expected one ProvideV, got {other:?}"),
    }
}

fn good() -> RoundOutcome {
    RoundOutcome::passed().with_public_key("PK")
}

/// A node that went through START and its first good round, now in GET_QUOTE.
fn attested(config: Arc<AttestationConfig>) -> NodeAttestation {
    let mut n = NodeAttestation::new(config, false);
    n.start(t(100)).unwrap();
    let (id, _, _) = quote(&mut n, t(100));
    n.quote_received(t(101), id, good()).unwrap();
    assert_eq!(n.state(), S::GetQuote);
    n
}

// ---- states ----

#[test]
fn states_have_keylime_numbers_names_and_serde() {
    for (i, s) in OperationalState::ALL.iter().enumerate() {
        assert_eq!(usize::from(s.code()), i);
        assert_eq!(OperationalState::from_code(i as u64), Ok(*s));
        assert_eq!(serde_json::to_string(s).unwrap(), i.to_string());
        let back: OperationalState = serde_json::from_str(&i.to_string()).unwrap();
        assert_eq!(back, *s);
    }
    assert_eq!(OperationalState::from_code(11), Err(InvalidState(11)));
    assert!(serde_json::from_str::<OperationalState>("11").is_err());
    assert!(serde_json::from_str::<OperationalState>("\"GET_QUOTE\"").is_err());
    assert_eq!(S::GetQuoteRetry.name(), "GET_QUOTE_RETRY");
    assert_eq!(S::GetQuoteRetry.to_string(), "Get Quote (retry)");
    assert_eq!(S::TenantFailed.description(), "Tenant Quote Failed");
    let pass: Vec<u8> = OperationalState::ALL
        .iter()
        .filter(|s| s.attestation_status() == AttestationStatus::Pass)
        .map(|s| s.code())
        .collect();
    let fail: Vec<u8> = OperationalState::ALL
        .iter()
        .filter(|s| s.attestation_status() == AttestationStatus::Fail)
        .map(|s| s.code())
        .collect();
    assert_eq!(pass, [3, 4, 5, 6]);
    assert_eq!(fail, [7, 9, 10]);
    let resume: Vec<u8> = OperationalState::ALL
        .iter()
        .filter(|s| s.resumes_on_restart())
        .map(|s| s.code())
        .collect();
    assert_eq!(resume, [1, 3, 4, 5, 6]);
}

// ---- severity ----

#[test]
fn default_severity_puts_everything_at_emergency() {
    let s = SeverityConfig::default();
    assert_eq!(s.max_level(), 6);
    assert_eq!(s.level_of("ima.validation.ima-ng.not_in_allowlist"), 6);
    assert_eq!(s.label(6), "emergency");
    let r = s.rate(&ima_fail());
    assert!(r.recoverable);
    assert!(r.stops_polling, "any failure stops polling by default");
    assert_eq!(r.level(), Some(6));
}

#[test]
fn severity_policy_first_full_match_wins() {
    let s = graded();
    assert_eq!(s.level_of("ima.pcr_mismatch"), 2);
    assert_eq!(s.level_of("pcr_validation.invalid_pcr_7"), 3);
    // fullmatch: `ima\..*` does not match an id that merely contains "ima."
    assert_eq!(s.level_of("xima.pcr_mismatch"), 6);
    let unknown = SeverityConfig::new(
        vec!["low".into(), "high".into()],
        &[SeverityRule {
            event_id: "ima.*".into(),
            severity_label: "nope".into(),
        }],
    )
    .unwrap();
    assert_eq!(unknown.level_of("ima.x"), 1, "unknown label → top");
    assert_eq!(unknown.level_of("other"), 1, "no match → top");
}

#[test]
fn irrecoverable_events_are_forced_to_the_top_and_the_first_top_event_rates() {
    let s = graded();
    let f = failure(vec![
        event(Component::Ima, &[], "pcr_mismatch", true),
        event(Component::PcrValidation, &[], "invalid_pcr_1", true),
        event(Component::PcrValidation, &[], "invalid_pcr_2", true),
        event(Component::Ima, &[], "quote_progress", true),
    ]);
    let r = s.rate(&f);
    assert_eq!(
        r.highest_event().unwrap().event_id,
        "pcr_validation.invalid_pcr_1"
    );
    assert_eq!(r.level(), Some(3));
    assert!(!r.stops_polling);
    let f = failure(vec![
        event(Component::Ima, &[], "pcr_mismatch", true),
        event(
            Component::QuoteValidation,
            &[],
            "invalid_ima_entry_nb",
            false,
        ),
    ]);
    let r = s.rate(&f);
    assert!(!r.recoverable);
    assert!(r.stops_polling);
    let top = r.highest_event().unwrap();
    assert_eq!(top.event_id, "qoute_validation.invalid_ima_entry_nb");
    assert_eq!(
        (top.severity_level, top.severity_label.as_str()),
        (6, "emergency")
    );
}

#[test]
fn severity_config_errors_name_the_input() {
    assert_eq!(
        SeverityConfig::new(vec![], &[]).unwrap_err(),
        SeverityConfigError::NoLabels
    );
    assert_eq!(
        SeverityConfig::new(vec!["a".into()], &[]).unwrap_err(),
        SeverityConfigError::NoRules
    );
    assert_eq!(
        SeverityConfig::new(
            vec!["a".into(), "a".into()],
            &[SeverityRule {
                event_id: ".*".into(),
                severity_label: "a".into()
            }]
        )
        .unwrap_err(),
        SeverityConfigError::DuplicateLabel("a".into())
    );
    let e = SeverityConfig::from_keylime_json(
        r#"["info","emergency"]"#,
        r#"[{"event_id":"ima(","severity_label":"info"}]"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("\"ima(\""), "{e}");
    let ok = SeverityConfig::from_keylime_json(
        r#"["info","emergency"]"#,
        r#"[{"event_id":"ima\\..*","severity_label":"info"},{"event_id":".*","severity_label":"emergency"}]"#,
    )
    .unwrap();
    assert_eq!(ok.level_of("ima.x"), 0);
    assert!(SeverityConfig::from_keylime_json("{}", "[]").is_err());
}

// ---- backoff ----

#[test]
fn retry_delays_follow_keylime_retry_time() {
    let c = AttestationConfig::default();
    let d: Vec<u64> = (1..=5).map(|n| c.retry_delay(n).as_secs()).collect();
    assert_eq!(d, [2, 4, 8, 16, 32]);
    assert_eq!(c.probe_interval(), Duration::from_secs(32));
    let flat = AttestationConfig {
        exponential_backoff: false,
        ..AttestationConfig::default()
    };
    assert_eq!(flat.retry_delay(4), Duration::from_secs(2));
    // A base of at most one second cannot grow: Keylime falls back to the base.
    let small = AttestationConfig {
        retry_interval: Duration::from_millis(500),
        ..AttestationConfig::default()
    };
    assert_eq!(small.retry_delay(3), Duration::from_millis(500));
    assert_eq!(c.retry_delay(200), node::MAX_RETRY_DELAY);
    assert_eq!(c.attestation_period(), "2s");
    assert_eq!(c.maximum_attestation_interval(), "10s");
}

// ---- the happy path ----

#[test]
fn start_asks_for_a_full_quote_at_once_then_polls_every_interval() {
    let mut n = NodeAttestation::new(cfg(), false);
    assert_eq!(n.state(), S::Start);
    assert_eq!(n.poll_action(t(100)), None, "nothing before start");
    n.start(t(100)).unwrap();
    assert_eq!(n.next_deadline(), Some(t(100)));
    let (id, partial, entry) = quote(&mut n, t(100));
    assert!(!partial, "the first quote carries the public key");
    assert_eq!(entry, 0);
    assert_eq!(
        n.next_deadline(),
        None,
        "nothing while a request is in flight"
    );
    assert_eq!(n.poll_action(t(200)), None);
    assert_eq!(n.state(), S::Start, "START until the first round ends");

    n.quote_received(t(101), id, good()).unwrap();
    assert_eq!(n.state(), S::GetQuote);
    assert_eq!(n.attestation_count(), 1);
    assert_eq!(n.last_received_quote(), 101);
    assert_eq!(n.last_successful_attestation(), 101);
    assert_eq!(n.public_key(), Some("PK"));
    assert_eq!(n.next_deadline(), Some(t(103)));
    assert_eq!(n.poll_action(t(102)), None, "not before quote_interval");
    let (id, partial, _) = quote(&mut n, t(103));
    assert!(partial, "later quotes may leave out the cached key");
    n.quote_received(t(104), id, RoundOutcome::passed())
        .unwrap();
    assert_eq!(n.attestation_count(), 2);
    assert_eq!(n.next_deadline(), Some(t(106)));
}

/// The trust gate's on-demand round: a scheduled quote falls due now, one in flight
/// is awaited, and a node whose polling stopped gets no round.
#[test]
fn attest_now_brings_the_next_quote_forward_unless_polling_stopped() {
    let mut n = attested(cfg());
    // The next quote was due at 101 + quote_interval; asked at 101 it is due at once.
    assert_eq!(n.next_deadline(), Some(t(103)));
    assert!(n.attest_now(t(101)));
    assert_eq!(n.next_deadline(), Some(t(101)));
    let (id, _, _) = quote(&mut n, t(101));
    assert!(
        n.attest_now(t(101)),
        "a request in flight is a round coming"
    );
    n.quote_received(t(102), id, RoundOutcome::failed(pcr_fail()))
        .unwrap();
    assert_eq!(n.state(), S::InvalidQuote);
    assert!(!n.attest_now(t(102)), "the default severity stops polling");
    assert_eq!(n.next_deadline(), None);
}

#[test]
fn quote_interval_zero_polls_again_immediately() {
    let mut n = attested(cfg_with(|c| c.quote_interval = Duration::ZERO));
    assert_eq!(n.next_deadline(), Some(t(101)));
    quote(&mut n, t(101));
}

#[test]
fn v_is_delivered_after_the_first_good_quote() {
    let mut n = NodeAttestation::new(cfg(), true);
    n.start(t(0)).unwrap();
    let (id, _, _) = quote(&mut n, t(0));
    n.quote_received(t(1), id, good()).unwrap();
    assert_eq!(n.state(), S::ProvideV);
    let vid = provide_v(&mut n, t(1));
    assert_eq!(
        n.quote_received(t(2), vid, good()),
        Err(Ignored::WrongKind(vid))
    );
    n.v_delivered(t(2), vid).unwrap();
    assert_eq!(n.state(), S::GetQuote);
    assert_eq!(n.next_deadline(), Some(t(4)));
    let (id, partial, _) = quote(&mut n, t(4));
    assert!(partial);
    // A partial quote (no key) does not deliver V again.
    n.quote_received(t(5), id, RoundOutcome::passed()).unwrap();
    assert_eq!(n.state(), S::GetQuote);
    // A changed key invalidates V: deliver it again.
    let (id, _, _) = quote(&mut n, t(7));
    n.quote_received(t(8), id, RoundOutcome::passed().with_public_key("PK2"))
        .unwrap();
    assert_eq!(n.state(), S::ProvideV);
    assert_eq!(n.public_key(), Some("PK2"));
}

#[test]
fn without_v_the_node_goes_straight_to_get_quote() {
    let n = attested(cfg());
    assert_eq!(n.state(), S::GetQuote);
    assert_eq!(n.next_deadline(), Some(t(103)));
}

#[test]
fn round_keeps_algs_clock_and_ima_offset() {
    let mut n = attested(cfg());
    let (id, _, entry) = quote(&mut n, t(103));
    assert_eq!(entry, 0);
    let mut ima = ImaAttestState::new();
    ima.next_entry = 42;
    ima.running_pcr = Some(HashAlg::Sha256.hash(b"x"));
    ima.boottime = 7;
    let clock = ClockInfo {
        clock: 5000,
        reset_count: 1,
        restart_count: 2,
        safe: true,
    };
    let algs = QuoteAlgs {
        hash_alg: "sha256".into(),
        enc_alg: "rsa".into(),
        sign_alg: "rsassa".into(),
    };
    n.quote_received(
        t(104),
        id,
        RoundOutcome::passed()
            .with_algs(algs.clone())
            .with_clock(clock)
            .with_ima(ima.clone(), Some(HashAlg::Sha256)),
    )
    .unwrap();
    assert_eq!(n.algs(), &algs);
    assert_eq!(n.tpm_clockinfo(), Some(&clock));
    assert_eq!(n.ima_state(), &ima);
    assert_eq!(n.ima_bank(), Some(HashAlg::Sha256));
    let (id, _, entry) = quote(&mut n, t(106));
    assert_eq!(entry, 42, "the next round asks from the stored offset");

    // A failed round: the clock is not taken, the (reset) IMA state is.
    let later = ClockInfo {
        clock: 9000,
        ..clock
    };
    n.quote_received(
        t(107),
        id,
        RoundOutcome::failed(ima_fail())
            .with_clock(later)
            .with_ima(ImaAttestState::new(), None),
    )
    .unwrap();
    assert_eq!(n.tpm_clockinfo(), Some(&clock));
    assert_eq!(n.ima_state().next_entry, 0);
    assert_eq!(n.last_received_quote(), 107);
    assert_eq!(n.last_successful_attestation(), 104);

    // A reactivation trusts the node again: the TPM clock's monotonicity starts afresh
    // (a TPM reset without a seen reboot no longer needs a delete and re-add), and a
    // restart from the snapshot keeps it that way.
    n.reactivate(t(108)).unwrap();
    assert_eq!(n.tpm_clockinfo(), None);
    let restored = NodeAttestation::restore(cfg(), n.snapshot(), t(109));
    assert_eq!(restored.tpm_clockinfo(), None);
}

#[test]
fn reboot_resets_ima_and_skips_the_round_without_a_verdict() {
    let mut n = attested(cfg());
    let (id, _, _) = quote(&mut n, t(103));
    let mut ima = ImaAttestState::new();
    ima.next_entry = 9;
    ima.boottime = 1;
    n.quote_received(t(104), id, RoundOutcome::passed().with_ima(ima, None))
        .unwrap();
    let (id, _, entry) = quote(&mut n, t(106));
    assert_eq!(entry, 9);
    let before = n.snapshot();
    n.quote_received(t(107), id, RoundOutcome::rebooted())
        .unwrap();
    assert_eq!(n.state(), S::GetQuote);
    assert_eq!(n.ima_state(), &ImaAttestState::new());
    assert_eq!(n.attestation_count(), before.attestation_count);
    assert_eq!(n.last_received_quote(), before.last_received_quote);
    // Vigil asks again at once, from entry 0.
    assert_eq!(n.next_deadline(), Some(t(107)));
    let (_, partial, entry) = quote(&mut n, t(107));
    assert_eq!((partial, entry), (false, 0));
}

// ---- attestation failures ----

#[test]
fn attestation_failure_is_invalid_quote_with_a_revocation_and_stops_by_default() {
    let mut n = attested(cfg());
    let (id, _, _) = quote(&mut n, t(103));
    n.quote_received(t(104), id, RoundOutcome::failed(ima_fail()))
        .unwrap();
    assert_eq!(n.state(), S::InvalidQuote);
    assert_eq!(n.severity_level(), Some(6));
    assert_eq!(
        n.last_event_id(),
        Some("ima.validation.ima-ng.not_in_allowlist")
    );
    assert_eq!(n.attestation_count(), 1);
    assert_eq!(n.last_received_quote(), 104);
    let actions = drain(&mut n, t(104));
    let [Action::Notify(Notification { kind, event })] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!(*kind, NotificationKind::Revocation);
    assert_eq!(event.event_id, "ima.validation.ima-ng.not_in_allowlist");
    assert_eq!(event.severity_label, "emergency");
    assert_eq!(n.next_deadline(), None, "polling stopped");
    assert_eq!(n.last_failures().len(), 1);
    assert_eq!(n.state().attestation_status(), AttestationStatus::Fail);
}

#[test]
fn the_failing_file_reaches_the_status_and_survives_a_restart() {
    let mut n = attested(cfg());
    let (id, _, _) = quote(&mut n, t(103));
    let mut f = Failure::new();
    f.push(
        Event::new(
            Component::Ima,
            &["validation", "ima-ng"],
            "runtime_policy_hash",
            json!({"message": "Hash not found in runtime policy", "got": "ab", "expected": ["cd"]}),
            true,
        )
        .with_file("/root/backup.sh"),
    );
    n.quote_received(t(104), id, RoundOutcome::failed(f))
        .unwrap();
    assert_eq!(
        n.last_failures()[0].file.as_deref(),
        Some("/root/backup.sh")
    );
    let status = NodeStatus::new(StatusEnrolment::default(), &n).to_json();
    let shown = &status["vigil"]["last_failures"][0];
    assert_eq!(shown["file"], "/root/backup.sh");
    assert!(shown["context"].get("file").is_none(), "{shown}");
    // The revocation notice's event carries Keylime's context unchanged.
    let actions = drain(&mut n, t(104));
    let [Action::Notify(Notification { event, .. })] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!(event.context["got"], "ab");
    assert!(event.context.get("file").is_none());
    // Stored and restored: the annotation is kept; a state stored before it existed
    // still loads.
    let text = serde_json::to_string(&n.snapshot()).unwrap();
    let back: NodeSnapshot = serde_json::from_str(&text).unwrap();
    assert_eq!(
        back.last_failures[0].file.as_deref(),
        Some("/root/backup.sh")
    );
    let old = text.replace(r#","file":"/root/backup.sh""#, "");
    assert_ne!(old, text);
    let back: NodeSnapshot = serde_json::from_str(&old).unwrap();
    assert_eq!(back.last_failures[0].file, None);
}

#[test]
fn recoverable_failures_below_the_top_poll_again_at_once_and_notify_only_on_rise() {
    let mut n = attested(cfg_with(|c| c.severity = graded()));
    let (id, _, _) = quote(&mut n, t(103));
    n.quote_received(t(104), id, RoundOutcome::failed(ima_fail()))
        .unwrap();
    assert_eq!(n.state(), S::InvalidQuote);
    assert_eq!(n.severity_level(), Some(2));
    let a = drain(&mut n, t(104));
    assert!(
        matches!(
            a.as_slice(),
            [Action::Notify(_), Action::GetQuote { partial: true, .. }]
        ),
        "{a:?}"
    );
    let Some(Action::GetQuote { id, .. }) = a.get(1).cloned() else {
        unreachable!()
    };
    // Same severity again: silent.
    n.quote_received(t(105), id, RoundOutcome::failed(ima_fail()))
        .unwrap();
    let (id, _, _) = quote(&mut n, t(105));
    // Higher severity: notify again, last_event_id moves.
    n.quote_received(t(106), id, RoundOutcome::failed(pcr_fail()))
        .unwrap();
    assert_eq!(n.severity_level(), Some(3));
    assert_eq!(n.last_event_id(), Some("pcr_validation.invalid_pcr_0"));
    let a = drain(&mut n, t(106));
    assert!(
        matches!(&a[0], Action::Notify(Notification { event, .. }) if event.severity_label == "error")
    );
    let Some(Action::GetQuote { id, .. }) = a.get(1).cloned() else {
        panic!("{a:?}")
    };
    // Lower severity: severity_level and last_event_id stay.
    n.quote_received(t(107), id, RoundOutcome::failed(ima_fail()))
        .unwrap();
    assert_eq!(n.severity_level(), Some(3));
    assert_eq!(n.last_event_id(), Some("pcr_validation.invalid_pcr_0"));
    let (id, _, _) = quote(&mut n, t(107));
    // A good round: back to GET_QUOTE; severity is never lowered (Keylime).
    n.quote_received(t(108), id, RoundOutcome::passed())
        .unwrap();
    assert_eq!(n.state(), S::GetQuote);
    assert_eq!(n.severity_level(), Some(3));
    assert_eq!(
        n.last_failures()[0].event_id,
        "ima.validation.ima-ng.not_in_allowlist"
    );
}

#[test]
fn an_irrecoverable_failure_stops_even_with_a_lenient_policy() {
    let mut n = attested(cfg_with(|c| c.severity = graded()));
    let (id, _, _) = quote(&mut n, t(103));
    let f = failure(vec![
        event(Component::Ima, &[], "pcr_mismatch", true),
        event(Component::QuoteValidation, &[], "quote_validation", false),
    ]);
    n.quote_received(t(104), id, RoundOutcome::failed(f))
        .unwrap();
    assert_eq!(n.state(), S::InvalidQuote);
    assert_eq!(n.last_event_id(), Some("qoute_validation.quote_validation"));
    assert_eq!(drain(&mut n, t(104)).len(), 1, "the notice only");
    assert_eq!(n.next_deadline(), None);
}

#[test]
fn a_first_round_failure_asks_for_the_key_again() {
    // Keylime re-polls with partial=1 and then fails with no_pubkey, since the key of
    // a failed round is not stored; Vigil asks for it while none is cached.
    let mut n = NodeAttestation::new(cfg_with(|c| c.severity = graded()), false);
    n.start(t(0)).unwrap();
    let (id, _, _) = quote(&mut n, t(0));
    n.quote_received(
        t(1),
        id,
        RoundOutcome::failed(ima_fail()).with_public_key("PK"),
    )
    .unwrap();
    assert_eq!(n.public_key(), None);
    let a = drain(&mut n, t(1));
    assert!(
        matches!(a.last(), Some(Action::GetQuote { partial: false, .. })),
        "{a:?}"
    );
}

#[test]
fn failed_rounds_keep_a_bounded_list_of_events() {
    let mut n = attested(cfg());
    let (id, _, _) = quote(&mut n, t(103));
    let many = failure(
        (0..1000)
            .map(|i| {
                Event::new(
                    Component::Ima,
                    &["validation", "ima-ng"],
                    "not_in_allowlist",
                    json!({"message": format!("File not found in allowlist: /f{i}")}),
                    true,
                )
            })
            .collect(),
    );
    n.quote_received(t(104), id, RoundOutcome::failed(many))
        .unwrap();
    assert_eq!(n.last_failures().len(), node::MAX_KEPT_FAILURES);
    assert_eq!(
        n.last_failures_omitted(),
        1000 - node::MAX_KEPT_FAILURES as u64
    );
    assert_eq!(
        n.last_failures()[0].context["message"],
        "File not found in allowlist: /f0"
    );
}

// ---- communication failures ----

#[test]
fn unreachable_node_retries_with_backoff_then_fails_not_reachable() {
    let mut n = NodeAttestation::new(cfg(), false);
    n.start(t(0)).unwrap();
    let mut now = t(0);
    for (attempt, delay) in [2u64, 4, 8, 16, 32].into_iter().enumerate() {
        let (id, partial, _) = quote(&mut n, now);
        if attempt > 0 {
            assert!(!partial, "retries ask for the key");
        }
        n.request_failed(now, id, CommFailure::Unreachable("refused".into()))
            .unwrap();
        assert_eq!(n.state(), S::GetQuoteRetry);
        assert_eq!(n.num_retries(), attempt as u32 + 1);
        assert_eq!(
            n.next_deadline(),
            Some(now.saturating_add(Duration::from_secs(delay)))
        );
        assert!(
            matches!(n.reachability(), Reachability::Retrying { attempts, .. } if attempts == attempt as u32 + 1)
        );
        assert_eq!(n.state().attestation_status(), AttestationStatus::Pass);
        now = now.saturating_add(Duration::from_secs(delay));
        assert_eq!(
            n.poll_action(t(now.as_secs() - 1)),
            None,
            "not before the delay"
        );
    }
    let (id, _, _) = quote(&mut n, now);
    n.request_failed(now, id, CommFailure::Status(599)).unwrap();
    assert_eq!(n.state(), S::Failed);
    assert_eq!(n.last_event_id(), Some("internal.verifier.not_reachable"));
    assert_eq!(n.severity_level(), Some(6));
    assert!(
        drain(&mut n, now).is_empty(),
        "no comm_error for a node that never attested"
    );
    assert_eq!(n.next_deadline(), None);
    assert!(
        matches!(n.reachability(), Reachability::Unreachable { since, attempts: 6 } if since == t(0))
    );
    assert!(n.failed_unreachable());
}

#[test]
fn retries_exhausted_on_an_attested_node_send_comm_error() {
    let mut n = attested(cfg_with(|c| c.max_retries = 1));
    let (id, _, _) = quote(&mut n, t(103));
    n.request_failed(t(103), id, CommFailure::Status(408))
        .unwrap();
    assert_eq!(n.state(), S::GetQuoteRetry);
    let (id, _, _) = quote(&mut n, t(105));
    n.request_failed(t(105), id, CommFailure::Status(500))
        .unwrap();
    assert_eq!(n.state(), S::Failed);
    let a = drain(&mut n, t(105));
    let [Action::Notify(Notification { kind, event })] = a.as_slice() else {
        panic!("{a:?}")
    };
    assert_eq!(*kind, NotificationKind::CommError);
    assert_eq!(event.event_id, "internal.verifier.not_reachable");
}

#[test]
fn a_successful_answer_ends_the_retry_streak() {
    let mut n = attested(cfg());
    let (id, _, _) = quote(&mut n, t(103));
    n.request_failed(t(103), id, CommFailure::Unreachable("x".into()))
        .unwrap();
    let (id, _, _) = quote(&mut n, t(105));
    n.quote_received(t(106), id, good()).unwrap();
    assert_eq!(n.state(), S::GetQuote);
    assert_eq!(n.num_retries(), 0);
    assert_eq!(n.reachability(), Reachability::Reachable);
}

#[test]
fn other_errors_fail_at_once_with_keylime_event_ids() {
    for (f, id) in [
        (CommFailure::Status(404), "internal.verifier.no_quote"),
        (CommFailure::Status(400), "internal.verifier.no_quote"),
        (
            CommFailure::VersionUnsupported,
            "internal.verifier.version_not_supported",
        ),
        (
            CommFailure::BadResponse("not JSON".into()),
            "internal.verifier.exception",
        ),
        (
            CommFailure::TooLarge { limit: 1 << 20 },
            "internal.verifier.answer_too_large",
        ),
    ] {
        let mut n = attested(cfg_with(|c| c.auto_recover = true));
        let (rid, _, _) = quote(&mut n, t(103));
        n.request_failed(t(103), rid, f.clone()).unwrap();
        assert_eq!(n.state(), S::Failed, "{f:?}");
        assert_eq!(n.last_event_id(), Some(id));
        assert!(!n.failed_unreachable(), "{f:?} is not unreachability");
        assert_eq!(n.next_deadline(), None, "not probed: {f:?}");
        assert!(
            drain(&mut n, t(103)).is_empty(),
            "FAILED sends no revocation"
        );
    }
}

#[test]
fn a_renegotiated_api_version_counts_as_a_retry() {
    let mut n = attested(cfg());
    let (id, _, _) = quote(&mut n, t(103));
    n.request_failed(t(103), id, CommFailure::VersionRenegotiated)
        .unwrap();
    assert_eq!(n.state(), S::GetQuoteRetry);
    assert_eq!(n.reachability(), Reachability::Reachable);
    assert_eq!(n.next_deadline(), Some(t(105)));
}

#[test]
fn v_delivery_retries_then_fails_not_reachable_v_with_comm_error() {
    let mut n = NodeAttestation::new(cfg_with(|c| c.max_retries = 2), true);
    n.start(t(0)).unwrap();
    let (id, _, _) = quote(&mut n, t(0));
    n.quote_received(t(1), id, good()).unwrap();
    let mut now = t(1);
    for delay in [2, 4] {
        let vid = provide_v(&mut n, now);
        n.request_failed(now, vid, CommFailure::Status(599))
            .unwrap();
        assert_eq!(n.state(), S::ProvideVRetry);
        now = now.saturating_add(Duration::from_secs(delay));
        assert_eq!(n.next_deadline(), Some(now));
    }
    let vid = provide_v(&mut n, now);
    n.request_failed(now, vid, CommFailure::Unreachable("down".into()))
        .unwrap();
    assert_eq!(n.state(), S::Failed);
    assert_eq!(n.last_event_id(), Some("internal.verifier.not_reachable_v"));
    let a = drain(&mut n, now);
    assert!(
        matches!(
            a.as_slice(),
            [Action::Notify(Notification {
                kind: NotificationKind::CommError,
                ..
            })]
        ),
        "{a:?}"
    );

    let mut n = NodeAttestation::new(cfg(), true);
    n.start(t(0)).unwrap();
    let (id, _, _) = quote(&mut n, t(0));
    n.quote_received(t(1), id, good()).unwrap();
    let vid = provide_v(&mut n, t(1));
    n.request_failed(t(1), vid, CommFailure::Status(400))
        .unwrap();
    assert_eq!(n.last_event_id(), Some("internal.verifier.no_v"));
    assert_eq!(n.last_failures()[0].context["data"], 400);
}

// ---- Vigil: auto_recover ----

#[test]
fn auto_recover_probes_an_unreachable_node_and_brings_it_back() {
    let mut n = attested(cfg_with(|c| {
        c.auto_recover = true;
        c.max_retries = 0;
    }));
    let (id, _, _) = quote(&mut n, t(103));
    n.request_failed(t(103), id, CommFailure::Unreachable("down".into()))
        .unwrap();
    assert_eq!(n.state(), S::Failed);
    assert!(n.failed_unreachable());
    drain(&mut n, t(103)); // the comm_error notice
                           // Probed at the longest retry delay (max_retries 0 → one retry's worth: 2 s).
    assert_eq!(n.next_deadline(), Some(t(105)));
    let (id, partial, _) = quote(&mut n, t(105));
    assert!(!partial);
    n.request_failed(t(105), id, CommFailure::Unreachable("down".into()))
        .unwrap();
    assert_eq!(n.state(), S::Failed, "a failed probe changes nothing");
    assert!(
        drain(&mut n, t(105)).is_empty(),
        "and sends no second notice"
    );
    assert!(matches!(
        n.reachability(),
        Reachability::Unreachable { attempts: 2, .. }
    ));
    let (id, _, _) = quote(&mut n, t(107));
    n.quote_received(t(108), id, good()).unwrap();
    assert_eq!(n.state(), S::GetQuote);
    assert_eq!(n.reachability(), Reachability::Reachable);
    assert_eq!(n.attestation_count(), 2);
    assert_eq!(n.severity_level(), Some(6), "severity is never lowered");
}

#[test]
fn auto_recover_does_not_whitewash_bad_evidence() {
    let mut n = attested(cfg_with(|c| {
        c.auto_recover = true;
        c.max_retries = 0;
    }));
    let (id, _, _) = quote(&mut n, t(103));
    n.request_failed(t(103), id, CommFailure::Unreachable("down".into()))
        .unwrap();
    drain(&mut n, t(103));
    let (id, _, _) = quote(&mut n, t(105));
    n.quote_received(t(106), id, RoundOutcome::failed(ima_fail()))
        .unwrap();
    assert_eq!(n.state(), S::InvalidQuote);
    // The comm_error did not use up the revocation: the bad evidence is reported.
    let a = drain(&mut n, t(106));
    assert!(
        matches!(
            a.as_slice(),
            [Action::Notify(Notification {
                kind: NotificationKind::Revocation,
                ..
            })]
        ),
        "{a:?}"
    );
    assert_eq!(n.next_deadline(), None);
}

#[test]
fn without_auto_recover_a_failed_node_waits_for_reactivate() {
    let mut n = attested(cfg_with(|c| c.max_retries = 0));
    let (id, _, _) = quote(&mut n, t(103));
    n.request_failed(t(103), id, CommFailure::Unreachable("down".into()))
        .unwrap();
    drain(&mut n, t(103));
    assert_eq!(n.next_deadline(), None);
    assert_eq!(n.poll_action(t(10_000)), None);
}

// ---- tenant actions ----

#[test]
fn stop_cancels_polling_and_ignores_the_answer_in_flight() {
    let mut n = attested(cfg());
    let (id, _, _) = quote(&mut n, t(103));
    n.stop(t(103)).unwrap();
    assert_eq!(n.state(), S::TenantFailed);
    assert_eq!(n.next_deadline(), None);
    assert_eq!(
        n.quote_received(t(104), id, good()),
        Err(Ignored::Stale {
            got: id,
            in_flight: None
        })
    );
    assert_eq!(
        n.attestation_count(),
        1,
        "the late answer counted for nothing"
    );
    assert_eq!(n.state().attestation_status(), AttestationStatus::Fail);
}

#[test]
fn reactivate_restarts_from_start_and_re_arms_notices() {
    let mut n = attested(cfg());
    let (id, _, _) = quote(&mut n, t(103));
    n.quote_received(t(104), id, RoundOutcome::failed(ima_fail()))
        .unwrap();
    assert_eq!(drain(&mut n, t(104)).len(), 1);
    n.reactivate(t(200)).unwrap();
    assert_eq!(n.state(), S::Start);
    let (id, partial, _) = quote(&mut n, t(200));
    assert!(!partial);
    n.quote_received(t(201), id, RoundOutcome::failed(ima_fail()))
        .unwrap();
    // Keylime: same severity → no notice and the state stays as it was. Vigil: the
    // state shows the failure and the reactivated node is reported again.
    assert_eq!(n.state(), S::InvalidQuote);
    assert_eq!(drain(&mut n, t(201)).len(), 1);
    assert_eq!(n.severity_level(), Some(6));
}

#[test]
fn reactivate_abandons_the_request_in_flight() {
    let mut n = attested(cfg());
    let (old, _, _) = quote(&mut n, t(103));
    n.reactivate(t(103)).unwrap();
    let (new, _, _) = quote(&mut n, t(103));
    assert_ne!(old, new);
    assert_eq!(
        n.request_failed(t(104), old, CommFailure::Status(599)),
        Err(Ignored::Stale {
            got: old,
            in_flight: Some(new)
        })
    );
    n.quote_received(t(104), new, good()).unwrap();
    assert_eq!(n.state(), S::GetQuote);
}

#[test]
fn delete_when_idle_is_immediate_and_final() {
    let mut n = attested(cfg());
    assert_eq!(n.deleted(t(102)), Deletion::Immediate);
    assert_eq!(n.state(), S::Terminated);
    assert_eq!(n.poll_action(t(1000)), None);
    assert_eq!(n.next_deadline(), None);
    assert_eq!(n.reactivate(t(103)), Err(Ignored::Terminated));
    assert_eq!(n.stop(t(103)), Err(Ignored::Terminated));
    assert_eq!(
        n.quote_received(t(103), RequestId(0), good()),
        Err(Ignored::Terminated)
    );
    assert_eq!(n.state(), S::Terminated);
}

#[test]
fn delete_during_a_request_waits_for_it_then_removes() {
    let mut n = attested(cfg());
    let (id, _, _) = quote(&mut n, t(103));
    assert_eq!(n.deleted(t(103)), Deletion::Deferred);
    assert_eq!(
        n.deleted(t(103)),
        Deletion::Deferred,
        "a second DELETE: 202 again"
    );
    assert_eq!(n.state(), S::Terminated);
    n.quote_received(t(104), id, good()).unwrap();
    assert_eq!(n.attestation_count(), 1, "the round is not recorded");
    assert_eq!(drain(&mut n, t(104)), vec![Action::Remove]);
    assert_eq!(n.poll_action(t(10_000)), None);
    assert_eq!(n.deleted(t(105)), Deletion::Immediate);
}

#[test]
fn delete_in_a_failed_state_is_immediate_even_with_a_probe_out() {
    let mut n = attested(cfg_with(|c| {
        c.auto_recover = true;
        c.max_retries = 0;
    }));
    let (id, _, _) = quote(&mut n, t(103));
    n.request_failed(t(103), id, CommFailure::Unreachable("x".into()))
        .unwrap();
    drain(&mut n, t(103));
    quote(&mut n, t(105));
    assert_eq!(n.deleted(t(105)), Deletion::Immediate);
}

// ---- persistence ----

#[test]
fn snapshot_round_trips_through_json_and_resumes_polling() {
    let mut n = attested(cfg_with(|c| c.severity = graded()));
    let (id, _, _) = quote(&mut n, t(103));
    let mut ima = ImaAttestState::new();
    ima.next_entry = 1234;
    ima.running_pcr = Some(HashAlg::Sha256.hash(b"pcr"));
    n.quote_received(
        t(104),
        id,
        RoundOutcome::failed(ima_fail()).with_ima(ima.clone(), Some(HashAlg::Sha256)),
    )
    .unwrap();
    drain(&mut n, t(104));
    let snap = n.snapshot();
    let text = serde_json::to_string(&snap).unwrap();
    let back: NodeSnapshot = serde_json::from_str(&text).unwrap();
    assert_eq!(back, snap);
    assert!(text.contains("\"operational_state\":9"), "{text}");

    // INVALID_QUOTE with a recoverable failure: Keylime does not resume it.
    let mut r = NodeAttestation::restore(cfg(), back, t(500));
    assert_eq!(r.state(), S::InvalidQuote);
    assert_eq!(r.poll_action(t(500)), None);
    assert_eq!(r.snapshot(), snap);

    // GET_QUOTE resumes at once from the stored IMA offset, asking for the key.
    let mut snap = snap;
    snap.operational_state = S::GetQuoteRetry;
    let mut r = NodeAttestation::restore(cfg(), snap.clone(), t(500));
    assert_eq!(r.state(), S::GetQuote);
    let (rid, partial, entry) = quote(&mut r, t(500));
    assert_eq!((partial, entry), (false, 1234));
    assert!(
        rid.0 >= n.snapshot().next_request,
        "request ids are not reused"
    );
    assert_eq!(r.attestation_count(), 1);
    assert_eq!(r.severity_level(), Some(2));

    snap.operational_state = S::ProvideVRetry;
    let mut r = NodeAttestation::restore(cfg(), snap.clone(), t(500));
    assert_eq!(r.state(), S::ProvideV);
    provide_v(&mut r, t(500));

    snap.public_key = None;
    let mut r = NodeAttestation::restore(cfg(), snap.clone(), t(500));
    assert_eq!(r.state(), S::Start);
    quote(&mut r, t(500));

    snap.operational_state = S::Terminated;
    let mut r = NodeAttestation::restore(cfg(), snap.clone(), t(500));
    assert_eq!(drain(&mut r, t(500)), vec![Action::Remove]);

    for s in [S::TenantFailed, S::Failed, S::Saved, S::Registered] {
        snap.operational_state = s;
        let mut r = NodeAttestation::restore(cfg(), snap.clone(), t(500));
        assert_eq!(r.poll_action(t(500)), None, "{s:?}");
        assert_eq!(r.state(), s);
    }
}

#[test]
fn restore_keeps_the_quote_interval_since_the_last_answer() {
    // Answered at 103.x (stored as 103), handed over at once to a replica that
    // restores it at 104: its first quote waits for 103.5 + the interval.
    let mut n = attested(cfg());
    let (id, _, _) = quote(&mut n, t(103));
    n.quote_received(t(103), id, RoundOutcome::passed())
        .unwrap();
    drain(&mut n, t(103));
    let interval = cfg().quote_interval;
    let due = t(103).saturating_add(Duration::from_millis(500) + interval);
    let mut r = NodeAttestation::restore(cfg(), n.snapshot(), t(104));
    assert_eq!(r.next_deadline(), Some(due));
    assert_eq!(r.poll_action(t(104)), None);
    quote(&mut r, due);
}

#[test]
fn restore_resumes_probing_an_unreachable_node_with_auto_recover() {
    let config = cfg_with(|c| {
        c.auto_recover = true;
        c.max_retries = 0;
    });
    let mut n = attested(config.clone());
    let (id, _, _) = quote(&mut n, t(103));
    n.request_failed(t(103), id, CommFailure::Unreachable("x".into()))
        .unwrap();
    let snap = n.snapshot();
    let mut r = NodeAttestation::restore(config, snap.clone(), t(900));
    assert!(r.failed_unreachable());
    quote(&mut r, t(900));
    let mut r = NodeAttestation::restore(cfg(), snap, t(900));
    assert_eq!(
        r.poll_action(t(900)),
        None,
        "no probing without auto_recover"
    );
}

// ---- status object ----

#[test]
fn status_object_has_every_keylime_field_in_order() {
    let mut n = NodeAttestation::new(cfg(), false);
    let enrolment = StatusEnrolment {
        v: Some("dmtleQ==".into()),
        ip: Some("10.0.0.5".into()),
        port: Some(9002),
        tpm_policy: r#"{"mask": "0x0"}"#.into(),
        meta_data: "{}".into(),
        has_mb_refstate: false,
        has_runtime_policy: true,
        accept_tpm_hash_algs: vec!["sha256".into()],
        accept_tpm_encryption_algs: vec!["rsa".into()],
        accept_tpm_signing_algs: vec!["rsassa".into()],
        verifier_id: "default".into(),
        verifier_ip: "127.0.0.1".into(),
        verifier_port: 8881,
    };
    let fresh = NodeStatus::new(enrolment.clone(), &n)
        .keylime_only()
        .to_json();
    let keys: Vec<&str> = fresh
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "operational_state",
            "v",
            "ip",
            "port",
            "tpm_policy",
            "meta_data",
            "has_mb_refstate",
            "has_runtime_policy",
            "accept_tpm_hash_algs",
            "accept_tpm_encryption_algs",
            "accept_tpm_signing_algs",
            "hash_alg",
            "enc_alg",
            "sign_alg",
            "verifier_id",
            "verifier_ip",
            "verifier_port",
            "severity_level",
            "last_event_id",
            "attestation_count",
            "last_received_quote",
            "last_successful_attestation",
            "attestation_status",
            "attestation_period",
            "maximum_attestation_interval",
        ]
    );
    assert_eq!(fresh["operational_state"], 1);
    assert_eq!(fresh["hash_alg"], "");
    assert_eq!(fresh["severity_level"], json!(null));
    assert_eq!(fresh["last_event_id"], json!(null));
    assert_eq!(fresh["has_mb_refstate"], 0);
    assert_eq!(fresh["has_runtime_policy"], 1);
    assert_eq!(fresh["attestation_status"], "PENDING");
    assert_eq!(fresh["attestation_period"], "2s");
    assert_eq!(fresh["maximum_attestation_interval"], "10s");
    assert_eq!(fresh["port"], 9002);

    n.start(t(50)).unwrap();
    let (id, _, _) = quote(&mut n, t(50));
    n.quote_received(
        t(51),
        id,
        good().with_algs(QuoteAlgs {
            hash_alg: "sha256".into(),
            enc_alg: "rsa".into(),
            sign_alg: "rsassa".into(),
        }),
    )
    .unwrap();
    let (id, _, _) = quote(&mut n, t(53));
    n.quote_received(t(54), id, RoundOutcome::failed(pcr_fail()))
        .unwrap();
    let s = NodeStatus::new(enrolment, &n).to_json();
    assert_eq!(s["operational_state"], 9);
    assert_eq!(s["hash_alg"], "sha256");
    assert_eq!(s["severity_level"], 6);
    assert_eq!(s["last_event_id"], "pcr_validation.invalid_pcr_0");
    assert_eq!(s["attestation_count"], 1);
    assert_eq!(s["last_received_quote"], 54);
    assert_eq!(s["last_successful_attestation"], 51);
    assert_eq!(s["attestation_status"], "FAIL");
    assert_eq!(s["vigil"]["state_name"], "INVALID_QUOTE");
    assert_eq!(s["vigil"]["reachability"]["status"], "reachable");
    assert_eq!(
        s["vigil"]["last_failures"][0]["event_id"],
        "pcr_validation.invalid_pcr_0"
    );
    assert_eq!(
        s["vigil"]["last_failures"][0]["severity_label"],
        "emergency"
    );
}

// ---- random input sequences ----

/// Drives nodes with random inputs and checks the invariants after every step.
#[test]
fn random_input_sequences_keep_the_invariants() {
    let mut visited = std::collections::BTreeSet::new();
    let mut notices = 0;
    for seed in 0..300u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let config = cfg_with(|c| {
            c.auto_recover = seed % 2 == 0;
            c.max_retries = (seed % 4) as u32;
            c.severity = if seed % 3 == 0 {
                SeverityConfig::default()
            } else {
                graded()
            };
            c.quote_interval = Duration::from_millis(seed % 3 * 1000);
        });
        let mut node = NodeAttestation::new(config.clone(), seed % 5 == 0);
        let mut now = t(1_000);
        node.start(now).unwrap();
        let mut removed = 0;
        let mut prev = node.snapshot();
        let mut terminated = false;
        for step in 0..200 {
            // Time moves forward by 0-40 s.
            now = now.saturating_add(Duration::from_millis(rng.next_u64() % 40_000));
            let roll = rng.next_u32() % 100;
            let in_flight = node.in_flight();
            let deadline_before = node.next_deadline();
            match roll {
                0..=1 => {
                    let _ = node.stop(now);
                }
                2..=4 => {
                    let _ = node.reactivate(now);
                }
                5 => {
                    node.deleted(now);
                }
                6..=7 => {
                    // A verifier restart: the in-flight request is lost.
                    node = NodeAttestation::restore(config.clone(), node.snapshot(), now);
                }
                8..=9 => {
                    // A stale answer must never be applied.
                    let bogus = RequestId(u64::MAX - step);
                    assert!(node.quote_received(now, bogus, good()).is_err());
                }
                _ => {
                    if let Some(id) = in_flight {
                        let r = rng.next_u32() % 10;
                        let res = match r {
                            0..=3 => node
                                .quote_received(now, id, good())
                                .or_else(|_| node.v_delivered(now, id)),
                            4 => node.quote_received(now, id, RoundOutcome::failed(ima_fail())),
                            5 => node.quote_received(now, id, RoundOutcome::failed(pcr_fail())),
                            6 => node.quote_received(now, id, RoundOutcome::rebooted()),
                            7 => node.request_failed(now, id, CommFailure::Status(599)),
                            8 => node.request_failed(now, id, CommFailure::Status(404)),
                            _ => node.request_failed(now, id, CommFailure::Unreachable("x".into())),
                        };
                        // A quote answer to a V request is refused, then v_delivered
                        // applies; everything else in flight must be accepted.
                        if r > 3 && res.is_err() {
                            assert!(matches!(res, Err(Ignored::WrongKind(_))), "{res:?}");
                            node.v_delivered(now, id).unwrap();
                        }
                    }
                }
            }
            // A deadline set by an input is never in the past.
            if let Some(d) = node.next_deadline().filter(|d| Some(*d) != deadline_before) {
                assert!(
                    d >= now,
                    "deadline {d:?} before now {now:?}, seed {seed} step {step}"
                );
            }
            let actions = drain(&mut node, now);
            let requests = actions
                .iter()
                .filter(|a| matches!(a, Action::GetQuote { .. } | Action::ProvideV { .. }))
                .count();
            assert!(requests <= 1, "one request at a time: {actions:?}");
            if requests == 1 {
                assert!(node.in_flight().is_some());
                assert!(
                    !matches!(node.state(), S::Terminated | S::TenantFailed),
                    "request in {:?}",
                    node.state()
                );
            }
            visited.insert(node.state().code());
            notices += actions
                .iter()
                .filter(|a| matches!(a, Action::Notify(_)))
                .count();
            removed += actions.iter().filter(|a| **a == Action::Remove).count();

            let snap = node.snapshot();
            assert!(
                snap.attestation_count >= prev.attestation_count,
                "seed {seed}"
            );
            assert!(snap.last_received_quote >= prev.last_received_quote);
            assert!(snap.last_successful_attestation >= prev.last_successful_attestation);
            assert!(snap.severity_level >= prev.severity_level);
            if snap.severity_level != prev.severity_level {
                assert!(snap.last_event_id.is_some());
            }
            if terminated {
                assert_eq!(node.state(), S::Terminated, "TERMINATED is final");
            }
            terminated |= node.state() == S::Terminated;
            if node.state() == S::TenantFailed {
                assert_eq!(node.next_deadline(), None);
            }
            prev = snap;
        }
        if !terminated {
            assert_eq!(removed, 0, "Remove only for a deleted node");
        }
    }
    // The sequences reach every state the pull loop uses.
    assert_eq!(
        visited.into_iter().collect::<Vec<_>>(),
        [1, 3, 4, 5, 6, 7, 8, 9, 10]
    );
    assert!(notices > 0);
}

// ---- evaluate_round on Keylime's verified quote vector ----

mod evaluate {
    use super::*;
    use crate::ima::keyring::ImaKeyrings;
    use crate::policy::tpm::TpmPolicy;
    use crate::tpm::quote::{AkPublicKey, KeylimeQuote, QuoteVerifier};

    const FILES: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testdata/keylime/test-data/files/"
    );

    fn file(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FILES}{name}")).unwrap()
    }

    struct Fixture {
        quote: String,
        nonce: Vec<u8>,
        verifier: QuoteVerifier,
        tpm_policy: TpmPolicy,
        accept: Vec<String>,
        enc: Vec<String>,
        sign: Vec<String>,
    }

    /// PCRs 15 (zeros), 16 and 22 (ones), SHA-256, clock 5994.
    fn fixture() -> Fixture {
        let quote = KeylimeQuote {
            attest: file("quote.out"),
            signature: file("quotesig.out"),
            pcr_blob: file("quotepcr.out"),
        }
        .to_keylime_string();
        let ak = AkPublicKey::from_spki(&file("akpub.pem")).unwrap();
        let ones = "f".repeat(64);
        Fixture {
            quote,
            nonce: file("rand.out"),
            verifier: QuoteVerifier::new(ak),
            tpm_policy: TpmPolicy::from_json(&format!(
                r#"{{"22": ["{ones}"], "mask": "0x408000"}}"#
            ))
            .unwrap(),
            accept: vec!["sha256".into()],
            enc: vec!["ecc256".into(), "rsa".into()],
            sign: vec!["rsassa".into()],
        }
    }

    fn policy(f: &Fixture) -> RoundPolicy<'_> {
        RoundPolicy {
            verifier: &f.verifier,
            nonce: &f.nonce,
            accept_hash_algs: Some(&f.accept),
            accept_enc_algs: Some(&f.enc),
            accept_sign_algs: Some(&f.sign),
            bind_public_key: true,
            requested_pcrs: 0x408000,
            tpm_policy: &f.tpm_policy,
            runtime_policy: None,
            measured_boot: None,
            ignore_tomtou_errors: false,
            golden: None,
        }
    }

    fn answer(f: &Fixture) -> QuoteAnswer<'_> {
        QuoteAnswer {
            quote: &f.quote,
            public_key: Some("node key"),
            hash_alg: "sha256",
            enc_alg: "rsa",
            sign_alg: "rsassa",
            ..QuoteAnswer::default()
        }
    }

    fn ids(o: &RoundOutcome) -> Vec<&str> {
        o.failure
            .events()
            .iter()
            .map(|e| e.event_id.as_str())
            .collect()
    }

    #[test]
    fn a_verified_quote_reaches_the_pcr_checks() {
        let f = fixture();
        let node = NodeAttestation::new(cfg(), false);
        let o = evaluate_round(&node, &answer(&f), &policy(&f), &mut ImaKeyrings::new());
        // PCR 16 binds a key this test does not have; 22 matches the policy.
        assert_eq!(ids(&o), ["pcr_validation.invalid_pcr_16"]);
        assert_eq!(o.clock_info.unwrap().clock, 5994);
        assert_eq!(o.algs.as_ref().unwrap().hash_alg, "sha256");
        assert_eq!(o.public_key.as_deref(), Some("node key"));
        assert!(!o.rebooted);
    }

    #[test]
    fn checks_run_in_keylime_order() {
        let f = fixture();
        let node = NodeAttestation::new(cfg(), false);
        let p = policy(&f);
        let mut k = ImaKeyrings::new();
        let partial = QuoteAnswer {
            public_key: None,
            ..answer(&f)
        };
        assert_eq!(
            ids(&evaluate_round(&node, &partial, &p, &mut k)),
            ["qoute_validation.no_pubkey"]
        );
        for (a, id) in [
            (
                QuoteAnswer {
                    hash_alg: "sha1",
                    ..answer(&f)
                },
                "qoute_validation.invalid_hash_alg",
            ),
            (
                QuoteAnswer {
                    hash_alg: "md5",
                    ..answer(&f)
                },
                "qoute_validation.invalid_hash_alg",
            ),
            (
                QuoteAnswer {
                    enc_alg: "ecc384",
                    ..answer(&f)
                },
                "qoute_validation.invalid_enc_alg",
            ),
            (
                QuoteAnswer {
                    sign_alg: "ecschnorr",
                    ..answer(&f)
                },
                "qoute_validation.invalid_sign_alg",
            ),
            (
                QuoteAnswer {
                    quote: "not a quote",
                    ..answer(&f)
                },
                "qoute_validation.quote_validation",
            ),
        ] {
            let o = evaluate_round(&node, &a, &p, &mut k);
            assert_eq!(ids(&o), [id]);
            assert!(o.failure.is_irrecoverable());
        }
        // "ecc" is accepted by "ecc256" (Keylime's alias).
        let ecc = QuoteAnswer {
            enc_alg: "ecc",
            ..answer(&f)
        };
        assert_eq!(
            ids(&evaluate_round(&node, &ecc, &p, &mut k)),
            ["pcr_validation.invalid_pcr_16"]
        );
        let wrong_nonce = RoundPolicy {
            nonce: b"other",
            ..p
        };
        assert_eq!(
            ids(&evaluate_round(&node, &answer(&f), &wrong_nonce, &mut k)),
            ["qoute_validation.quote_validation"]
        );
    }

    /// The class's golden values are judged with the node's own policies: a PCR outside
    /// them fails naming the PCR, the class, the value quoted and the allowed ones; any
    /// allowed value passes.
    #[test]
    fn golden_values_of_the_class_are_checked() {
        use crate::policy::golden::GoldenPcrs;
        let f = fixture();
        let node = NodeAttestation::new(cfg(), false);
        let (zeros, ones) = ("0".repeat(64), "f".repeat(64));
        let golden = |values: &str| {
            GoldenPcrs::from_json(&format!(
                r#"{{"name": "r650", "bank": "sha256", "pcrs": {{"15": ["{zeros}"], "22": [{values}]}}}}"#
            ))
            .unwrap()
        };
        let wrong = golden(&format!(r#""{zeros}""#));
        let p = RoundPolicy {
            golden: Some(&wrong),
            ..policy(&f)
        };
        let o = evaluate_round(&node, &answer(&f), &p, &mut ImaKeyrings::new());
        assert_eq!(
            ids(&o),
            [
                "pcr_validation.invalid_pcr_16",
                "pcr_validation.invalid_pcr_22"
            ]
        );
        let event = &o.failure.events()[1].context;
        assert_eq!(event["class"], "r650");
        assert_eq!(event["got"], ones);
        assert_eq!(event["expected"], serde_json::json!([zeros]));
        let widened = golden(&format!(r#""{zeros}", "{ones}""#));
        let p = RoundPolicy {
            golden: Some(&widened),
            ..policy(&f)
        };
        let o = evaluate_round(&node, &answer(&f), &p, &mut ImaKeyrings::new());
        assert_eq!(ids(&o), ["pcr_validation.invalid_pcr_16"]);
    }

    /// A genuine quote that leaves out a PCR the verifier requested (here PCR 10, so
    /// IMA would go unchecked) is refused, whatever else it passes.
    #[test]
    fn a_quote_without_a_requested_pcr_is_refused() {
        let f = fixture();
        let node = NodeAttestation::new(cfg(), false);
        let p = RoundPolicy {
            requested_pcrs: 0x408400,
            ..policy(&f)
        };
        let o = evaluate_round(&node, &answer(&f), &p, &mut ImaKeyrings::new());
        // PCR 16 binds a key this test does not have (as in the test above).
        assert_eq!(
            ids(&o),
            [
                "pcr_validation.missing_requested_pcrs",
                "pcr_validation.invalid_pcr_16"
            ]
        );
        let event = &o.failure.events()[0];
        assert_eq!(event.context["data"], serde_json::json!([10]));
    }

    /// A node whose engine state came from rounds: clock, IMA offset and boot time.
    fn node_with(clock: u64, next_entry: u64, boottime: u64) -> NodeAttestation {
        let mut n = NodeAttestation::new(cfg(), false);
        n.start(t(0)).unwrap();
        let (id, _, _) = quote(&mut n, t(0));
        let mut ima = ImaAttestState::new();
        ima.next_entry = next_entry;
        ima.boottime = boottime;
        ima.running_pcr = Some(HashAlg::Sha256.zero());
        n.quote_received(
            t(1),
            id,
            good()
                .with_clock(ClockInfo {
                    clock,
                    reset_count: 0,
                    restart_count: 0,
                    safe: true,
                })
                .with_ima(ima, Some(HashAlg::Sha256)),
        )
        .unwrap();
        n
    }

    #[test]
    fn the_clock_is_checked_against_the_last_accepted_quote() {
        let f = fixture();
        let mut k = ImaKeyrings::new();
        let older = node_with(1000, 0, 0);
        assert_eq!(
            ids(&evaluate_round(&older, &answer(&f), &policy(&f), &mut k)),
            ["pcr_validation.invalid_pcr_16"]
        );
        let newer = node_with(10_000, 0, 0);
        let o = evaluate_round(&newer, &answer(&f), &policy(&f), &mut k);
        assert_eq!(ids(&o), ["qoute_validation.quote_validation"]);
        assert!(o.failure.events()[0].context["data"]
            .as_str()
            .unwrap()
            .contains("clock"));
    }

    #[test]
    fn ima_offset_rules() {
        let f = fixture();
        let mut k = ImaKeyrings::new();
        let node = node_with(0, 5, 77);
        // Another entry than requested: irrecoverable, and the other checks still run.
        let o = evaluate_round(
            &node,
            &QuoteAnswer {
                ima_measurement_list_entry: 3,
                boottime: 77,
                ..answer(&f)
            },
            &policy(&f),
            &mut k,
        );
        assert_eq!(
            ids(&o),
            [
                "qoute_validation.invalid_ima_entry_nb",
                "pcr_validation.invalid_pcr_16"
            ]
        );
        assert_eq!(o.ima.as_ref().unwrap().0.next_entry, 5);
        // The requested entry with another boot time: rebooted, no verdict.
        let o = evaluate_round(
            &node,
            &QuoteAnswer {
                ima_measurement_list_entry: 5,
                boottime: 78,
                ..answer(&f)
            },
            &policy(&f),
            &mut k,
        );
        assert!(o.rebooted);
        assert!(o.failure.is_empty());
        // Entry 0 restarts the IMA state.
        let o = evaluate_round(&node, &answer(&f), &policy(&f), &mut k);
        let (ima, _) = o.ima.unwrap();
        assert_eq!((ima.next_entry, ima.running_pcr), (0, None));
    }
}

#[test]
fn a_node_without_a_recent_success_is_reported_as_timed_out_not_passing() {
    let n = attested(cfg());
    let last = n.last_successful_attestation();
    let limit = Duration::from_secs(30);
    let at = |secs: u64| {
        NodeStatus::new(StatusEnrolment::default(), &n).with_staleness(t(last + secs), limit)
    };
    let fresh = at(30);
    assert_eq!(fresh.attestation_status, AttestationStatus::Pass);
    assert!(!fresh.vigil.as_ref().unwrap().stale);
    let stale = at(31);
    assert_eq!(stale.attestation_status, AttestationStatus::Timeout);
    assert_eq!(stale.to_json()["attestation_status"], "TIMEOUT");
    assert_eq!(stale.to_json()["vigil"]["stale"], true);
    // A failed or stopped node stays FAIL: staleness only takes PASS away.
    let mut stopped = attested(cfg());
    stopped.stop(t(last)).unwrap();
    let s =
        NodeStatus::new(StatusEnrolment::default(), &stopped).with_staleness(t(last + 999), limit);
    assert_eq!(s.attestation_status, AttestationStatus::Fail);
}
