//! Health pings against a real HTTP server on 127.0.0.1 (started by each test): the
//! healthchecks.io paths and methods, the failure body, retries, the time budget, refused
//! connections.

use std::time::{Duration, Instant};

use cairn::Error;
use cairn::ops::ping::{PingKind, PingOptions, PingOutcome, Pinger, TAIL_BYTES, log_tail};
use cairn_testkit::http::{Answer, HttpServer, refused_url};

fn fast(timeout_ms: u64) -> PingOptions {
    let mut o = PingOptions::with_timeout(Duration::from_millis(timeout_ms));
    o.retry_delay = Duration::from_millis(50);
    o
}

#[tokio::test]
async fn start_success_and_fail_use_the_healthchecks_paths() {
    let server = HttpServer::start(Answer::Status(200));
    let pinger = Pinger::new(&format!("{}/ping/abc/", server.url()), fast(5000)).unwrap();
    let start = pinger.start().await;
    let ok = pinger.success().await;
    let fail = pinger
        .fail("line one\nerror: stream command exited with 1\n")
        .await;
    for o in [&start, &ok, &fail] {
        assert!(o.is_sent(), "{o}");
    }
    assert!(
        matches!(&fail, PingOutcome::Sent { kind: PingKind::Fail, status: 200, attempts: 1, url } if url.ends_with("/ping/abc/fail")),
        "{fail:?}"
    );
    let got = server.requests();
    let seen: Vec<_> = got
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("GET", "/ping/abc/start"),
            ("GET", "/ping/abc"),
            ("POST", "/ping/abc/fail")
        ]
    );
    assert_eq!(got[2].body, "line one\nerror: stream command exited with 1");
}

#[tokio::test]
async fn a_query_string_stays_at_the_end() {
    let server = HttpServer::start(Answer::Status(200));
    let pinger = Pinger::new(&format!("{}/p/slug?create=1", server.url()), fast(5000)).unwrap();
    assert!(pinger.start().await.is_sent());
    assert_eq!(server.requests()[0].path, "/p/slug/start?create=1");
}

#[tokio::test]
async fn server_errors_are_retried_and_then_get_through() {
    let server = HttpServer::start(Answer::FailFirst(2));
    let pinger = Pinger::new(&server.url(), fast(5000)).unwrap();
    let o = pinger.success().await;
    assert!(
        matches!(
            o,
            PingOutcome::Sent {
                attempts: 3,
                status: 200,
                ..
            }
        ),
        "{o:?}"
    );
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn attempts_are_limited_and_a_404_is_not_repeated() {
    let server = HttpServer::start(Answer::Status(503));
    let pinger = Pinger::new(&server.url(), fast(5000)).unwrap();
    let o = pinger.start().await;
    assert!(
        matches!(&o, PingOutcome::Failed { attempts: 3, reason, .. } if reason.contains("503")),
        "{o:?}"
    );
    assert_eq!(server.requests().len(), 3);

    let server = HttpServer::start(Answer::Status(404));
    let pinger = Pinger::new(&server.url(), fast(5000)).unwrap();
    let o = pinger.fail("boom").await;
    assert!(
        matches!(&o, PingOutcome::Failed { attempts: 1, reason, .. } if reason.contains("404")),
        "{o:?}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_server_that_never_answers_costs_at_most_the_timeout() {
    let server = HttpServer::start(Answer::Never);
    let pinger = Pinger::new(&server.url(), fast(1500)).unwrap();
    let t = Instant::now();
    let o = pinger.success().await;
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}, budget 1.5 s");
    assert!(
        matches!(&o, PingOutcome::Failed { attempts: 2.., reason, .. } if reason.contains("no answer")),
        "{o:?}"
    );
    // The request did arrive; only the answer was missing.
    assert!(!server.requests().is_empty());
}

#[tokio::test]
async fn a_refused_connection_is_an_outcome_not_an_error() {
    let pinger = Pinger::new(&refused_url(), fast(3000)).unwrap();
    let t = Instant::now();
    let o = pinger.fail("x").await;
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(
            &o,
            PingOutcome::Failed {
                kind: PingKind::Fail,
                attempts: 3,
                ..
            }
        ),
        "{o:?}"
    );
    let json = serde_json_like(&o);
    assert!(json.contains("\"result\":\"failed\""), "{json}");
}

#[tokio::test]
async fn a_pinged_run_sends_start_then_end_and_is_bounded_by_one_timeout() {
    let server = HttpServer::start(Answer::Status(200));
    let run = Pinger::new(&server.url(), fast(5000)).unwrap().begin();
    let report = run.finish(Some("error: it broke")).await;
    assert!(report.start.is_sent() && report.end.is_sent(), "{report:?}");
    let paths: Vec<_> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/start", "/fail"]);

    // A silent server: the run's end (start still waiting, then the final ping) fits in one
    // timeout (4 s), both reported failed; one timeout for each ping would take 8 s.
    let server = HttpServer::start(Answer::Never);
    let run = Pinger::new(&server.url(), fast(4000)).unwrap().begin();
    let t = Instant::now();
    let report = run.finish(None).await;
    let took = t.elapsed();
    assert!(took < Duration::from_secs(7), "took {took:?}, budget 4 s");
    assert_eq!(report.failed().count(), 2, "{report:?}");
}

#[test]
fn bad_urls_are_caller_errors_and_passwords_stay_out_of_messages() {
    for bad in ["ftp://host/x", "not a url", "mailto:someone@example.org"] {
        let r = Pinger::new(bad, PingOptions::default());
        assert!(matches!(r, Err(Error::Invalid(_))), "{bad}: {r:?}");
    }
    let r = Pinger::new("ftp://user:secret@host/x", PingOptions::default());
    assert!(
        matches!(&r, Err(Error::Invalid(m)) if !m.contains("secret")),
        "{r:?}"
    );
    let p = Pinger::new("https://user:secret@hc.example/abc", PingOptions::default()).unwrap();
    assert_eq!(p.ping_url(PingKind::Fail), "https://hc.example/abc/fail");
}

#[test]
fn the_log_tail_keeps_the_last_lines_and_bytes() {
    let log: String = (1..=250).map(|i| format!("line {i}\n")).collect();
    let tail = log_tail(&log, 100, TAIL_BYTES);
    assert_eq!(tail.lines().count(), 100);
    assert!(
        tail.starts_with("line 151\n") && tail.ends_with("line 250"),
        "{tail}"
    );
    let long = "é".repeat(20_000);
    let tail = log_tail(&long, 100, TAIL_BYTES);
    assert!(tail.len() <= TAIL_BYTES && tail.len() >= TAIL_BYTES - 1);
    assert!(tail.chars().all(|c| c == 'é'));
    assert_eq!(log_tail("a\nb\n\n", 1, 100), "b");
    assert_eq!(log_tail("a\nb", 0, 100), "");
}

/// The outcome as JSON, through serde (the shape `--json` prints).
fn serde_json_like(o: &PingOutcome) -> String {
    serde_json::to_string(o).unwrap()
}

#[tokio::test]
async fn https_goes_through_tls() {
    // A plain HTTP server behind an https:// URL: the TLS handshake fails (the client does
    // speak TLS; a build without it would refuse the scheme instead).
    let server = HttpServer::start(Answer::Status(200));
    let url = server.url().replace("http://", "https://");
    let pinger = Pinger::new(&url, fast(3000)).unwrap();
    let o = pinger.start().await;
    assert!(
        matches!(&o, PingOutcome::Failed { attempts: 1.., reason, .. } if reason.to_lowercase().contains("tls")),
        "{o:?}"
    );
    assert!(server.requests().is_empty(), "{:?}", server.requests());
}
