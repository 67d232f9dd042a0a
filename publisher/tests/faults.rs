//! The publisher under hostile conditions, with the real binary against the sandbox: a
//! flood of idle connections to its endpoint under a low open-file limit, and nodes that
//! send huge bodies or huge numbers of series (README "Guarantees under faults").

use std::time::{Duration, Instant};

use sandbox::fleet::Fault;
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::e2e::{
    CLUSTER_ID, RunningPublisher, TestSandbox, http_get, served_address, start_sandbox,
};

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
