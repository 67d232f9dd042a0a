//! The scraper against simulated aws-node endpoints: the round's deadline bounds a round
//! however many hung nodes hold the concurrency slots, and results stream out as they
//! complete.

use std::time::{Duration, Instant};

use cni_metrics_publisher::discovery::ScrapeTarget;
use cni_metrics_publisher::scrape::{ScrapeError, ScrapeOptions, Scraper};
use futures::StreamExt;
use sandbox::fleet::{AWS_NODE_NAMESPACE, Fault, Fleet, FleetOptions, IPAMD_METRICS_PORT};

fn settings(concurrency: usize, timeout: Duration, round_timeout: Duration) -> ScrapeOptions {
    ScrapeOptions {
        port: IPAMD_METRICS_PORT,
        concurrency,
        timeout,
        round_timeout,
        body_limit: 4 * 1024 * 1024,
        memory_budget: 64 * 4 * 1024 * 1024,
    }
}

async fn start_fleet(nodes: usize) -> Fleet {
    Fleet::start(FleetOptions {
        nodes,
        ..FleetOptions::default()
    })
    .await
    .expect("the fleet starts")
}

/// Every node of `fleet` as a target scraped directly, in node order.
pub(crate) fn targets(fleet: &Fleet) -> Vec<ScrapeTarget> {
    fleet
        .nodes()
        .iter()
        .map(|node| ScrapeTarget {
            uid: node.pod_uid(),
            name: node.pod_name(),
            namespace: AWS_NODE_NAMESPACE.to_owned(),
            host_ip: node.address().ip().to_string(),
            zone: None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_round_deadline_ends_a_round_stuck_behind_a_hung_node() {
    let fleet = start_fleet(4).await;
    // One slot, the second node hung: the first node answers, the second holds the slot
    // until the round's deadline, and the last two never get their turn. The per-pod
    // timeout alone would let the hung node hold the slot for a minute.
    fleet.node(1).set_fault(Fault::Hang);
    let round_timeout = Duration::from_millis(1500);
    let scraper = Scraper::direct(&settings(1, Duration::from_secs(60), round_timeout));
    let started = Instant::now();
    let mut results: Vec<_> = scraper.scrape_each(targets(&fleet)).collect().await;
    let elapsed = started.elapsed();
    results.sort_by_key(|(position, _)| *position);

    assert!(
        elapsed < Duration::from_secs(20),
        "the round waited for the hung node: {elapsed:?}"
    );
    let outcomes: Vec<String> = results
        .iter()
        .map(|(_, result)| match &result.outcome {
            Ok(_) => "ok".to_owned(),
            Err(ScrapeError::RoundDeadline(limit)) => format!("deadline {limit:?}"),
            Err(ScrapeError::NotStarted(limit)) => format!("not started {limit:?}"),
            Err(other) => format!("other: {other}"),
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            "ok",
            "deadline 1.5s",
            "not started 1.5s",
            "not started 1.5s"
        ]
    );
    // The pods that never started were not contacted.
    assert_eq!(fleet.node(2).request_count(), 0);
    assert_eq!(fleet.node(3).request_count(), 0);
    let message = results[2]
        .1
        .outcome
        .as_ref()
        .expect_err("not started")
        .to_string();
    assert!(message.contains("--round-timeout"), "{message}");
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_pod_timeout_applies_when_it_ends_before_the_round() {
    let fleet = start_fleet(3).await;
    fleet.node(0).set_fault(Fault::Hang);
    let timeout = Duration::from_millis(300);
    let scraper = Scraper::direct(&settings(4, timeout, Duration::from_secs(60)));
    let mut results: Vec<_> = scraper.scrape_each(targets(&fleet)).collect().await;
    results.sort_by_key(|(position, _)| *position);
    assert!(matches!(
        results[0].1.outcome,
        Err(ScrapeError::Timeout(limit)) if limit == timeout
    ));
    assert!(results[1].1.outcome.is_ok());
    assert!(results[2].1.outcome.is_ok());
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_holds_its_share_of_the_memory_budget_until_it_is_dropped() {
    let fleet = start_fleet(2).await;
    // Budget = body limit: one chunked body (no Content-Length, so it reserves the limit)
    // takes all of it.
    let limit = 256 * 1024;
    let options = ScrapeOptions {
        body_limit: limit,
        memory_budget: limit,
        ..settings(2, Duration::from_secs(2), Duration::from_secs(2))
    };
    let scraper = Scraper::direct(&options);
    let targets = targets(&fleet);
    let first = scraper.scrape(targets[0].clone()).await;
    assert!(first.outcome.is_ok(), "{:?}", first.outcome);
    assert_eq!(first.reserved_bytes(), limit);

    // While the first body is held, the second node's answer waits for the budget until its
    // timeout, although the node answered at once.
    let second = scraper.scrape(targets[1].clone()).await;
    assert!(
        matches!(
            second.outcome,
            Err(ScrapeError::Timeout(_) | ScrapeError::RoundDeadline(_))
        ),
        "{:?}",
        second.outcome
    );
    assert_eq!(second.reserved_bytes(), 0);
    assert!(fleet.node(1).request_count() >= 1, "the node was asked");

    // Dropping the first body returns its share.
    drop(first);
    let second = scraper.scrape(targets[1].clone()).await;
    assert!(second.outcome.is_ok(), "{:?}", second.outcome);
}

/// A node whose first connection closes without an answer (as a kept-alive connection the
/// node had just closed) and whose next one answers: the scrape tries once more and gets
/// the body. A node that never answers still fails, after exactly two connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_without_an_answer_is_tried_once_more() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const BODY: &str = "# TYPE awscni_ip_max gauge\nawscni_ip_max 29\n";
    // An address of its own on loopback, with the port the direct transport scrapes.
    async fn node(address: &str, answer_from: usize) -> Arc<AtomicUsize> {
        let listener = tokio::net::TcpListener::bind((address, IPAMD_METRICS_PORT))
            .await
            .expect("a loopback address of its own");
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let number = counted.fetch_add(1, Ordering::SeqCst) + 1;
                let mut request = [0_u8; 4096];
                let _ = stream.read(&mut request).await;
                if number >= answer_from {
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{BODY}",
                        BODY.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                }
                // Closing without an answer otherwise.
            }
        });
        connections
    }
    let target = |address: &str| ScrapeTarget {
        uid: format!("uid-{address}"),
        name: format!("pod-{address}"),
        namespace: AWS_NODE_NAMESPACE.to_owned(),
        host_ip: address.to_owned(),
        zone: None,
    };
    let flaky = node("127.254.253.251", 2).await;
    let dead = node("127.254.253.252", usize::MAX).await;
    let scraper = Scraper::direct(&settings(
        2,
        Duration::from_secs(5),
        Duration::from_secs(10),
    ));
    let mut results: Vec<_> = scraper
        .scrape_each(vec![target("127.254.253.251"), target("127.254.253.252")])
        .collect()
        .await;
    results.sort_by_key(|(position, _)| *position);
    match &results[0].1.outcome {
        Ok(body) => assert_eq!(body, BODY),
        Err(error) => panic!("the second try was not made or failed: {error}"),
    }
    assert_eq!(flaky.load(Ordering::SeqCst), 2);
    assert!(
        matches!(results[1].1.outcome, Err(ScrapeError::Unsent(_))),
        "{:?}",
        results[1].1.outcome
    );
    assert_eq!(dead.load(Ordering::SeqCst), 2, "one retry, not more");
}
