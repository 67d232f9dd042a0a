//! The publisher under hostile conditions, with the real binary against the sandbox: a
//! flood of idle connections to its endpoint under a low open-file limit, nodes that send
//! huge bodies or huge numbers of series, a large fleet of slow nodes, and nodes that stop
//! answering for a few rounds (README "Guarantees under faults").

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sandbox::fleet::Fault;
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::e2e::{
    CLUSTER_ID, GAUGES, PublishedDatum, RunningPublisher, TestSandbox, assert_close, cluster_value,
    eventually, http_get, published_datums, served_address, start_sandbox,
};

/// Held by the tests that load this machine's two cores for tens of seconds (the 4 MiB
/// bodies, the 100,000 series, the 2,000 slow nodes), so that they never run at the same
/// time: each measures time or memory that another one's load would distort (seen: a node
/// answering after 3 s took over 5 s to reach the publisher while another ran).
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The open-file limit the starvation test runs the publisher with.
const LOW_FILE_LIMIT: u64 = 128;
/// Idle connections opened against it: more than the file limit.
const IDLE_CONNECTIONS: usize = 200;

/// The publisher command, run through util-linux's `prlimit`, which sets the limits and then
/// execs the publisher, so the child's PID is the publisher's.
fn publisher_with_file_limit(sandbox: &TestSandbox, limit: u64, args: &[&str]) -> Command {
    let inner = sandbox.publisher(args);
    let std_inner = inner.as_std();
    let mut command = Command::new("prlimit");
    command
        .arg(format!("--nofile={limit}:{limit}"))
        .arg(std_inner.get_program())
        .args(std_inner.get_args())
        .env_clear()
        .envs(
            std_inner
                .get_envs()
                .filter_map(|(key, value)| value.map(|value| (key.to_owned(), value.to_owned()))),
        )
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    // prlimit itself is found through PATH, which the cleared environment no longer has.
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    command
}

/// The value of an unlabelled or cluster-labelled sample in a `/metrics` text.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = match rest.strip_prefix(&format!("{{cluster_id=\"{CLUSTER_ID}\"}}")) {
            Some(value) => value,
            None => rest,
        };
        value.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// GETs `/healthz` and says how long the answer took; a second is the kubelet's default
/// probe timeout.
async fn timed_healthz(address: &str) -> (Option<u16>, Duration) {
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(1), http_get(address, "/healthz"))
        .await
        .ok()
        .map(|(status, _)| status);
    (status, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_connections_cannot_starve_probes_or_scrapes_under_a_low_file_limit() {
    const NODES: usize = 10;
    let sandbox = start_sandbox(NODES).await;
    let publisher = RunningPublisher::start(publisher_with_file_limit(
        &sandbox,
        LOW_FILE_LIMIT,
        &[
            "run",
            "--interval",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--scrape-via",
            "direct",
        ],
    ));
    let address = served_address(&publisher, Duration::from_secs(30)).await;
    assert!(
        publisher.log().contains("max_connections=32"),
        "a quarter of the 128 open files: {}",
        publisher.log()
    );
    let (status, _) = http_get(&address, "/metrics").await;
    assert_eq!(status, 200);

    // The flood: connections that never send a byte, more than the file limit.
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        idle.push(
            TcpStream::connect(&address)
                .await
                .expect("the kernel accepts the connection into the backlog"),
        );
    }
    let (status, elapsed) = timed_healthz(&address).await;
    eprintln!("/healthz behind {IDLE_CONNECTIONS} idle connections: {status:?} in {elapsed:?}");
    assert_eq!(
        status,
        Some(200),
        "/healthz did not answer within 1 s behind {IDLE_CONNECTIONS} idle connections:\n{}",
        publisher.log()
    );

    // A round that starts after the flood scrapes every pod.
    let (_, metrics) = http_get(&address, "/metrics").await;
    let rounds_before = sample(&metrics, "cni_metrics_publisher_rounds_total").unwrap_or(0.0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let (status, metrics) = http_get(&address, "/metrics").await;
        assert_eq!(status, 200);
        if sample(&metrics, "cni_metrics_publisher_rounds_total").unwrap_or(0.0)
            >= rounds_before + 2.0
        {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "no new round within 30 s:\n{}",
            publisher.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        sample(&metrics, "cni_metrics_podsScraped"),
        Some(NODES as f64),
        "{metrics}\n{}",
        publisher.log()
    );
    assert_eq!(sample(&metrics, "cni_metrics_scrapeErrors"), Some(0.0));
    assert!(
        !publisher.log().contains("Too many open files"),
        "{}",
        publisher.log()
    );

    // The idle connections that were not evicted are closed by the header-read timeout
    // (5 s): every one of them reads end-of-file or a reset well within 30 s.
    let closed_within = Duration::from_secs(30);
    for mut stream in idle {
        use tokio::io::AsyncReadExt;
        let mut byte = [0_u8; 1];
        let read = tokio::time::timeout(closed_within, stream.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "an idle connection was still open after {closed_within:?}: {read:?}"
        );
    }
    let (status, elapsed) = timed_healthz(&address).await;
    assert_eq!(status, Some(200), "after the flood, in {elapsed:?}");
}

/// The memory limit `templates/manifests.yaml.hbs` renders for the publisher's container.
const RENDERED_MEMORY_LIMIT_BYTES: u64 = 256 * 1024 * 1024;

/// The peak resident set of a running process (`VmHWM`), in bytes.
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|error| panic!("/proc/{pid}/status is readable: {error}"));
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|number| number.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM line in /proc/{pid}/status:\n{status}"));
    kib * 1024
}

/// The template's memory limit, so that the test follows it if it changes.
fn rendered_memory_limit() -> u64 {
    let template = std::fs::read_to_string(
        sandbox::python_tools::workspace_root().join("templates/manifests.yaml.hbs"),
    )
    .expect("the manifests template is readable");
    let limit = template
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("limits:"))
        .find_map(|line| line.trim().strip_prefix("memory:"))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .expect("the template sets limits.memory");
    let mebibytes: u64 = limit
        .strip_suffix("Mi")
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("limits.memory {limit:?} is not in Mi"));
    mebibytes * 1024 * 1024
}

/// Runs the publisher against the sandbox every `interval` seconds until `rounds` rounds
/// completed and returns its last `/metrics` text and its peak RSS, then stops it. The
/// round deadline is 80% of the interval.
async fn run_rounds_and_measure(
    sandbox: &TestSandbox,
    interval: &str,
    rounds: f64,
    within: Duration,
    extra_args: &[&str],
) -> (String, u64, String) {
    let mut args = vec![
        "run",
        "--interval",
        interval,
        "--listen",
        "127.0.0.1:0",
        "--scrape-via",
        "direct",
    ];
    args.extend_from_slice(extra_args);
    let mut publisher = RunningPublisher::start(sandbox.publisher(&args));
    let address = served_address(&publisher, Duration::from_secs(30)).await;
    let deadline = Instant::now() + within;
    let metrics = loop {
        let (_, metrics) = http_get(&address, "/metrics").await;
        if sample(&metrics, "cni_metrics_publisher_rounds_total").unwrap_or(0.0) >= rounds {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {rounds} rounds within {within:?}:\n{}",
            publisher.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let peak = peak_rss_bytes(publisher.pid);
    publisher.signal("TERM");
    let status = publisher.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}\n{}", publisher.log());
    (metrics, peak, publisher.log())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_slow_four_mib_bodies_stay_inside_the_memory_limit() {
    let _alone = HEAVY.lock().await;
    const NODES: usize = 64;
    assert_eq!(rendered_memory_limit(), RENDERED_MEMORY_LIMIT_BYTES);
    let sandbox = start_sandbox(NODES).await;
    // Just under 4 MiB, sent over 2 s: every scrape holds its partial body that long.
    sandbox.sandbox.fleet().set_fault_all(Fault::SlowBody {
        size: 4_100_000,
        over: Duration::from_secs(2),
    });
    // The old default body limit, so that the bodies are accepted and the memory budget
    // (not the body limit) is what bounds them. The budget lets about eight 4 MiB bodies in
    // at once, so a round takes about 8 x 2 s = 16 s: the default 30 s interval gives it a
    // 24 s deadline.
    let (metrics, peak, log) = run_rounds_and_measure(
        &sandbox,
        "30",
        2.0,
        Duration::from_secs(240),
        &["--scrape-body-limit", "4MiB", "--scrape-timeout", "90s"],
    )
    .await;
    eprintln!(
        "64 slow 4 MiB bodies: peak RSS {:.1} MiB",
        peak as f64 / 1048576.0
    );
    assert!(
        peak < RENDERED_MEMORY_LIMIT_BYTES,
        "peak RSS {peak} bytes is over the rendered limit\n{log}"
    );
    // The budget made scrapes wait, not fail.
    assert_eq!(
        sample(&metrics, "cni_metrics_podsScraped"),
        Some(NODES as f64),
        "{metrics}\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_nodes_with_a_hundred_thousand_series_each_stay_inside_the_memory_limit() {
    let _alone = HEAVY.lock().await;
    const NODES: usize = 10;
    let sandbox = start_sandbox(NODES).await;
    sandbox
        .sandbox
        .fleet()
        .set_fault_all(Fault::ManySeries(100_000));
    // A body limit the ~4.2 MB bodies fit, so that the series limit is what stops them.
    // Five rounds, because the series are new every round: without the limit, the state and
    // the label sets of successive rounds pile up past the rendered limit by then (measured:
    // 302 MiB).
    // A 7 s interval gives each round a 5.6 s deadline, about the 5 s it had when this test
    // was measured, so that the pods fail on the series limit, not on the deadline.
    let (metrics, peak, log) = run_rounds_and_measure(
        &sandbox,
        "7",
        5.0,
        Duration::from_secs(120),
        &["--scrape-body-limit", "8MiB"],
    )
    .await;
    eprintln!(
        "10 nodes x 100k series: peak RSS {:.1} MiB",
        peak as f64 / 1048576.0
    );
    assert!(
        peak < RENDERED_MEMORY_LIMIT_BYTES,
        "peak RSS {peak} bytes is over the rendered limit\n{log}"
    );
    assert_eq!(sample(&metrics, "cni_metrics_podsScraped"), Some(0.0));
    assert_eq!(
        sample(&metrics, "cni_metrics_scrapeErrors"),
        Some(NODES as f64),
        "{metrics}"
    );
    assert!(log.contains("--max-series-per-pod"), "{log}");
}

/// Every round CloudWatch received, oldest first: its start time (epoch seconds) and datums.
fn published_rounds_in_order(sandbox: &TestSandbox) -> Vec<(f64, Vec<PublishedDatum>)> {
    let mut rounds: BTreeMap<String, Vec<PublishedDatum>> = BTreeMap::new();
    for datum in published_datums(&sandbox.put_metric_data()) {
        rounds
            .entry(datum.timestamp.clone())
            .or_default()
            .push(datum);
    }
    let mut rounds: Vec<(f64, Vec<PublishedDatum>)> = rounds
        .into_iter()
        .map(|(timestamp, datums)| {
            let seconds = timestamp
                .parse()
                .unwrap_or_else(|_| panic!("timestamps are epoch seconds: {timestamp}"));
            (seconds, datums)
        })
        .collect();
    rounds.sort_by(|left, right| left.0.total_cmp(&right.0));
    rounds
}

/// The durations of the publisher's rounds, from its "round done" log lines.
fn round_durations(log: &str) -> Vec<Duration> {
    log.lines()
        .filter(|line| line.contains("round done"))
        .filter_map(|line| {
            let elapsed = line
                .split_whitespace()
                .find_map(|word| word.strip_prefix("elapsed="))?;
            let (number, unit) =
                elapsed.split_at(elapsed.find(|c: char| c.is_alphabetic() || c == 'µ')?);
            let number: f64 = number.parse().ok()?;
            let scale = match unit {
                "s" => 1.0,
                "ms" => 1e-3,
                "µs" => 1e-6,
                "ns" => 1e-9,
                other => panic!("unexpected unit {other:?} in {line}"),
            };
            Some(Duration::from_secs_f64(number * scale))
        })
        .collect()
}

/// The sum of `sample_name` over every node's exposition number `sequence`: the true value
/// of a gauge in the round that scraped each node for the `sequence`-th time.
fn true_sum_at(sandbox: &TestSandbox, sequence: u64, sample_name: &str) -> f64 {
    sandbox
        .sandbox
        .fleet()
        .nodes()
        .iter()
        .map(|node| {
            node.served_history()
                .into_iter()
                .find(|served| served.sequence == sequence)
                .unwrap_or_else(|| {
                    panic!("node {} has no exposition number {sequence}", node.index())
                })
                .sum(sample_name)
                .unwrap_or(0.0)
        })
        .sum()
}

/// The soft open-file limit of this process.
fn own_open_file_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_slow_nodes_are_all_in_every_round_with_the_default_settings() {
    let _alone = HEAVY.lock().await;
    const NODES: usize = 2000;
    const ROUNDS: usize = 2;
    // Each node is a listener in this process, and the fake API server keeps a pooled
    // connection to each node it proxied to (both ends are in this process): measured
    // 6,014 open files after two rounds. A quarter more leaves room.
    let limit = own_open_file_limit();
    assert!(
        limit >= 4 * NODES as u64,
        "a {NODES}-node fleet needs about {} open files here; ulimit -n is {limit}",
        4 * NODES
    );
    let started = Instant::now();
    let sandbox = start_sandbox(NODES).await;
    let startup = started.elapsed();
    // Every node answers after 100 ms, as through the pods proxy of a busy API server;
    // every tenth after 3 s. With the publisher's defaults (concurrency 64, 5 s scrape
    // timeout, 30 s interval) a round takes about (1,800 x 0.1 s + 200 x 3 s) / 64 = 12 s.
    // The old default deadline, the 5 s scrape timeout, ended such a round after ~40% of
    // the nodes (the dry run at the end measures it); the default is now 24 s.
    for node in sandbox.sandbox.fleet().nodes() {
        node.set_fault(Fault::Slow(Duration::from_millis(
            if node.index() % 10 == 9 { 3000 } else { 100 },
        )));
    }
    // The defaults on purpose, the 30 s interval included: two rounds take about 45 s.
    let mut publisher = RunningPublisher::start(sandbox.publisher(&["run"]));
    eventually(Duration::from_secs(180), "two published rounds", || {
        published_rounds_in_order(&sandbox).len() >= ROUNDS
    })
    .await;
    publisher.signal("TERM");
    let status = publisher.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}\n{}", publisher.log());
    let log = publisher.log();
    let open_files = std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count);

    let rounds = published_rounds_in_order(&sandbox);
    for (number, (_, datums)) in rounds.iter().take(ROUNDS).enumerate() {
        // The n-th round scraped every node for the n-th time.
        let sequence = number as u64 + 1;
        assert_eq!(
            cluster_value(datums, CLUSTER_ID, "podsScraped"),
            Some(NODES as f64),
            "round {sequence}\n{log}"
        );
        assert_eq!(
            cluster_value(datums, CLUSTER_ID, "scrapeErrors"),
            Some(0.0),
            "round {sequence}"
        );
        for (family, metric) in GAUGES {
            let published = cluster_value(datums, CLUSTER_ID, metric)
                .unwrap_or_else(|| panic!("{metric} missing from round {sequence}"));
            assert_close(
                published,
                true_sum_at(&sandbox, sequence, family),
                &format!("{metric} in round {sequence}"),
            );
        }
    }
    let durations = round_durations(&log);
    eprintln!(
        "{NODES} nodes (100 ms, every tenth 3 s): sandbox started in {startup:?}, round \
         durations {durations:?}, {open_files} open files in the test process (limit {limit})"
    );
    assert!(
        !log.contains("round's deadline"),
        "no deadline warning with the default deadline:\n{log}"
    );

    // The old default: a 5 s round deadline. One dry run (no earlier round, so nothing can
    // stand in) shows what every round lost before.
    let output = sandbox
        .publisher(&["once", "--dry-run", "--round-timeout", "5s"])
        .output()
        .await
        .expect("the dry run runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let value_of = |name: &str| {
        printed["rounds"][0]["datums"]
            .as_array()
            .and_then(|datums| {
                datums.iter().find(|datum| {
                    datum["MetricName"] == name
                        && datum["Dimensions"].as_array().map(Vec::len) == Some(1)
                })
            })
            .and_then(|datum| datum["Value"].as_f64())
            .unwrap_or_else(|| panic!("{name} missing: {printed}"))
    };
    let true_max = sandbox.sandbox.fleet().expected_gauge_sum("awscni_ip_max");
    let (scraped, max) = (value_of("podsScraped"), value_of("maxIPAddresses"));
    eprintln!(
        "with --round-timeout 5s: {scraped} of {NODES} pods scraped, maxIPAddresses {max} \
         of {true_max}"
    );
    assert!(
        scraped < NODES as f64,
        "{scraped} pods scraped in 5 s\n{stderr}"
    );
    assert!(max < true_max, "maxIPAddresses {max} of {true_max}");
    assert!(stderr.contains("round's deadline"), "{stderr}");
}

/// The rounds the publisher at `address` has completed, from its `/metrics`.
async fn rounds_total(address: &str) -> (f64, String) {
    let (status, metrics) = http_get(address, "/metrics").await;
    assert_eq!(status, 200);
    let rounds = sample(&metrics, "cni_metrics_publisher_rounds_total").unwrap_or(0.0);
    (rounds, metrics)
}

/// Waits until the publisher has served a round after `after` rounds (polling often, so that
/// the caller acts well before the next round starts) and returns its `/metrics`.
async fn wait_for_round(address: &str, after: f64, within: Duration) -> (f64, String) {
    let deadline = Instant::now() + within;
    loop {
        let (rounds, metrics) = rounds_total(address).await;
        if rounds > after {
            return (rounds, metrics);
        }
        assert!(
            Instant::now() < deadline,
            "no round {} within {within:?}",
            after + 1.0
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// The sum of a constant gauge over the nodes at `indexes`, from what they last served.
fn last_served_sum(sandbox: &TestSandbox, indexes: &[usize], sample_name: &str) -> f64 {
    indexes
        .iter()
        .map(|index| {
            sandbox
                .sandbox
                .fleet()
                .node(*index)
                .last_served()
                .and_then(|served| served.sum(sample_name))
                .unwrap_or_else(|| panic!("node {index} served {sample_name}"))
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_that_stop_answering_keep_their_capacity_for_stale_rounds_then_drop_out() {
    const NODES: usize = 20;
    /// The default --stale-rounds.
    const STALE_ROUNDS: usize = 3;
    const WITHIN: Duration = Duration::from_secs(30);
    let sandbox = start_sandbox(NODES).await;
    let fleet = sandbox.sandbox.fleet();
    let mut publisher = RunningPublisher::start(sandbox.publisher(&[
        "run",
        "--interval",
        "1",
        "--listen",
        "127.0.0.1:0",
    ]));
    let address = served_address(&publisher, WITHIN).await;
    // Two healthy rounds, so that every node has a last good scrape.
    wait_for_round(&address, 1.0, WITHIN).await;
    let failing: [(usize, Fault); 3] =
        [(3, Fault::Http500), (11, Fault::Http500), (17, Fault::Hang)];
    let failing_nodes = failing.map(|(index, _)| index);
    // maxIPAddresses and eniMaxAvailable are constant per node: their true totals do not
    // depend on which round scraped which node.
    let true_max = fleet.expected_gauge_sum("awscni_ip_max");
    let true_eni = fleet.expected_gauge_sum("awscni_eni_max");
    let failing_max = last_served_sum(&sandbox, &failing_nodes, "awscni_ip_max");
    let failing_eni = last_served_sum(&sandbox, &failing_nodes, "awscni_eni_max");

    // The faults start right after a round, so that every later round sees all three.
    let (before_faults, _) = wait_for_round(&address, rounds_total(&address).await.0, WITHIN).await;
    let faulted_at = now_seconds();
    for (index, fault) in failing {
        fleet.node(index).set_fault(fault);
    }
    // /metrics counts the stale pods in each of the first --stale-rounds failing rounds, and
    // none once they are dropped.
    let mut served = before_faults;
    while served < before_faults + STALE_ROUNDS as f64 + 2.0 {
        let (rounds, metrics) = wait_for_round(&address, served, WITHIN).await;
        let expected = if rounds <= before_faults + STALE_ROUNDS as f64 {
            3.0
        } else {
            0.0
        };
        assert_eq!(
            sample(&metrics, "cni_metrics_publisher_stale_pods"),
            Some(expected),
            "failing round {}\n{metrics}",
            rounds - before_faults
        );
        served = rounds;
    }
    eventually(WITHIN, "five failing rounds in CloudWatch", || {
        published_rounds_in_order(&sandbox)
            .iter()
            .filter(|(started, _)| *started > faulted_at)
            .count()
            > STALE_ROUNDS + 1
    })
    .await;
    let rounds = published_rounds_in_order(&sandbox);
    let failing_rounds: Vec<&Vec<PublishedDatum>> = rounds
        .iter()
        .filter(|(started, _)| *started > faulted_at)
        .map(|(_, datums)| datums)
        .collect();
    for (number, datums) in failing_rounds.iter().enumerate() {
        let what = |metric: &str| format!("{metric} in failing round {}", number + 1);
        assert_eq!(cluster_value(datums, CLUSTER_ID, "podsScraped"), Some(17.0));
        assert_eq!(cluster_value(datums, CLUSTER_ID, "scrapeErrors"), Some(3.0));
        // Within --stale-rounds the failed nodes count with their last good values; after
        // it the totals drop by exactly their capacity.
        let (max, eni) = if number < STALE_ROUNDS {
            (true_max, true_eni)
        } else {
            (true_max - failing_max, true_eni - failing_eni)
        };
        let published = |metric: &str| {
            cluster_value(datums, CLUSTER_ID, metric).unwrap_or_else(|| panic!("{}", what(metric)))
        };
        assert_close(published("maxIPAddresses"), max, &what("maxIPAddresses"));
        assert_close(published("eniMaxAvailable"), eni, &what("eniMaxAvailable"));
    }
    let log = publisher.log();
    assert!(
        log.lines().any(|line| line.contains("stale_pods=3")
            && line.contains("3 pods not scraped this round count with the gauge values")),
        "{log}"
    );
    assert!(
        log.lines().any(|line| line.contains("dropped=3")),
        "the rounds after --stale-rounds say the pods were dropped:\n{log}"
    );

    // Recovery, again right after a round: each failed node's counters resume from their
    // last good scrape, counted once.
    let (before_recovery, _) =
        wait_for_round(&address, rounds_total(&address).await.0, WITHIN).await;
    let recovered_at = now_seconds();
    let scrapes_before: Vec<u64> = fleet
        .nodes()
        .iter()
        .map(|node| node.scrape_count())
        .collect();
    fleet.set_fault_all(Fault::None);
    let (_, metrics) = wait_for_round(&address, before_recovery, WITHIN).await;
    // Freeze the fleet before the next round, so that each node's last two expositions are
    // the ones the recovery round compared.
    fleet.set_fault_all(Fault::Http500);
    for (node, before) in fleet.nodes().iter().zip(&scrapes_before) {
        assert_eq!(
            node.scrape_count(),
            before + 1,
            "node {} was scraped again before the fleet was frozen",
            node.index()
        );
    }
    assert_eq!(
        sample(&metrics, "cni_metrics_publisher_stale_pods"),
        Some(0.0)
    );
    let expected_requests = fleet.expected_counter_delta("awscni_add_ip_req_count");
    let recovered_requests: f64 = failing_nodes
        .iter()
        .map(|index| {
            let history = fleet.node(*index).served_history();
            let [.., previous, current] = history.as_slice() else {
                panic!("node {index} served twice");
            };
            current.sum("awscni_add_ip_req_count").unwrap_or(0.0)
                - previous.sum("awscni_add_ip_req_count").unwrap_or(0.0)
        })
        .sum();
    eventually(WITHIN, "the recovery round in CloudWatch", || {
        published_rounds_in_order(&sandbox)
            .iter()
            .any(|(started, _)| *started > recovered_at)
    })
    .await;
    let rounds = published_rounds_in_order(&sandbox);
    let (_, recovery) = rounds
        .iter()
        .find(|(started, _)| *started > recovered_at)
        .expect("the recovery round");
    assert_eq!(
        cluster_value(recovery, CLUSTER_ID, "podsScraped"),
        Some(NODES as f64)
    );
    assert_close(
        cluster_value(recovery, CLUSTER_ID, "maxIPAddresses").expect("maxIPAddresses"),
        true_max,
        "maxIPAddresses after recovery",
    );
    assert_close(
        cluster_value(recovery, CLUSTER_ID, "addReqCount").expect("addReqCount"),
        expected_requests,
        "addReqCount in the recovery round",
    );
    eprintln!(
        "{} failing rounds: maxIPAddresses {true_max} for {STALE_ROUNDS} rounds, then {}; \
         recovery round addReqCount {expected_requests} ({recovered_requests} from the 3 \
         recovered nodes)",
        failing_rounds.len(),
        true_max - failing_max
    );
    publisher.signal("TERM");
    let status = publisher.wait(WITHIN).await;
    assert!(status.success(), "{status:?}\n{}", publisher.log());
}
