//! End-to-end tests of the real `cni-metrics-publisher` binary against the sandbox: the AWS
//! emulator (CloudWatch), the fake Kubernetes API server (pods, nodes, pods proxy, Leases)
//! and a simulated aws-node fleet on 127.x.y.z:61678. Every test starts its own sandbox and
//! passes its configuration to the child process only, so the tests run in parallel and in
//! any order. Only processes these tests start are ever signalled, by their PID.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sandbox::aws_emulator::RecordedRequest;
use sandbox::environment::{Sandbox, SandboxOptions};
use sandbox::fleet::Fault;
use sandbox::python_tools::{PythonTools, workspace_root};
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub(crate) const BINARY: &str = env!("CARGO_BIN_EXE_cni-metrics-publisher");
pub(crate) const CLUSTER_ID: &str = "e2e-cluster";
/// The gauge families a correct publisher sums over every scraped pod, with their
/// CloudWatch names.
pub(crate) const GAUGES: [(&str, &str); 5] = [
    ("awscni_assigned_ip_addresses", "assignIPAddresses"),
    ("awscni_total_ip_addresses", "totalIPAddresses"),
    ("awscni_ip_max", "maxIPAddresses"),
    ("awscni_eni_allocated", "eniAllocated"),
    ("awscni_eni_max", "eniMaxAvailable"),
];

pub(crate) struct TestSandbox {
    pub(crate) sandbox: Sandbox,
    // Held so the directory outlives the sandbox; removed on drop.
    dir: TempDir,
}

pub(crate) async fn start_sandbox(nodes: usize) -> TestSandbox {
    let dir = tempfile::tempdir().expect("a temp dir for the sandbox");
    let tools = PythonTools::find(&workspace_root()).unwrap_or_else(|error| panic!("{error}"));
    let options = SandboxOptions {
        nodes,
        ..SandboxOptions::new(dir.path().join("sandbox"))
    };
    let sandbox = Sandbox::start(&tools, options)
        .await
        .unwrap_or_else(|error| panic!("the sandbox starts: {error:?}"));
    TestSandbox { sandbox, dir }
}

impl TestSandbox {
    /// The publisher binary with only the sandbox's environment (nothing inherited from the
    /// test process, so a developer's own AWS or KUBECONFIG settings never leak in).
    pub(crate) fn publisher(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BINARY);
        command
            .env_clear()
            .envs(self.sandbox.env_vars())
            .env("HOME", self.dir.path())
            .env("AWS_CLUSTER_ID", CLUSTER_ID)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    fn cloudwatch_requests(&self) -> Vec<RecordedRequest> {
        self.sandbox
            .emulator()
            .expect("the sandbox started an emulator")
            .recorded_requests()
            .expect("the emulator's recording is readable")
            .into_iter()
            .filter(|request| request.service.as_deref() == Some("monitoring"))
            .collect()
    }

    pub(crate) fn put_metric_data(&self) -> Vec<RecordedRequest> {
        self.cloudwatch_requests()
            .into_iter()
            .filter(|request| request.action.as_deref() == Some("PutMetricData"))
            .collect()
    }

    fn fault(&self, faults: &[(usize, Fault)]) {
        for (index, fault) in faults {
            self.sandbox.fleet().node(*index).set_fault(*fault);
        }
    }
}

/// One datum as the emulator recorded it.
#[derive(Debug, Clone)]
pub(crate) struct PublishedDatum {
    pub(crate) name: String,
    pub(crate) value: f64,
    unit: String,
    dimensions: BTreeMap<String, String>,
    pub(crate) timestamp: String,
}

/// Every datum of every PutMetricData call, checking each call against CloudWatch's limits.
pub(crate) fn published_datums(requests: &[RecordedRequest]) -> Vec<PublishedDatum> {
    let mut datums = Vec::new();
    for request in requests {
        assert!(
            request.body.len() <= 1_000_000,
            "a PutMetricData body of {} bytes exceeds 1 MB",
            request.body.len()
        );
        let body = request.json_body().expect("a PutMetricData body is JSON");
        assert_eq!(body["Namespace"], "Kubernetes");
        let data = body["MetricData"].as_array().expect("MetricData is a list");
        assert!(
            !data.is_empty() && data.len() <= 1000,
            "a call carries {} datums",
            data.len()
        );
        for datum in data {
            let value = datum["Value"].as_f64().expect("every datum has a Value");
            assert!(value.is_finite(), "a non-finite value was sent: {datum}");
            let dimensions = datum["Dimensions"]
                .as_array()
                .map(|dimensions| {
                    dimensions
                        .iter()
                        .map(|dimension| {
                            (
                                dimension["Name"].as_str().unwrap_or_default().to_owned(),
                                dimension["Value"].as_str().unwrap_or_default().to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            datums.push(PublishedDatum {
                name: datum["MetricName"].as_str().unwrap_or_default().to_owned(),
                value,
                unit: datum["Unit"].as_str().unwrap_or_default().to_owned(),
                dimensions,
                timestamp: datum["Timestamp"].to_string(),
            });
        }
    }
    datums
}

pub(crate) fn cluster_value(datums: &[PublishedDatum], cluster: &str, name: &str) -> Option<f64> {
    let matching: Vec<&PublishedDatum> = datums
        .iter()
        .filter(|datum| {
            datum.name == name
                && datum.dimensions.len() == 1
                && datum.dimensions.get("CLUSTER_ID").map(String::as_str) == Some(cluster)
        })
        .collect();
    assert!(
        matching.len() <= 1,
        "{name} was published {} times in one round",
        matching.len()
    );
    matching.first().map(|datum| datum.value)
}

pub(crate) fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= 1e-6 * expected.abs().max(1.0),
        "{what}: published {actual}, expected {expected}"
    );
}

/// Runs `once` against 50 nodes, three of them broken, through `transport`.
async fn once_against_a_partly_broken_fleet(transport: &str) {
    let sandbox = start_sandbox(50).await;
    sandbox.fault(&[(7, Fault::Hang), (21, Fault::Http500), (42, Fault::Garbage)]);
    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    let output = sandbox
        .publisher(&["once", "--scrape-via", transport, "--scrape-timeout", "2s"])
        .output()
        .await
        .expect("the publisher runs");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "once failed: {stderr}");
    // A hung node costs at most the scrape timeout; the margin covers process start, the
    // initial pod listing and the CloudWatch call.
    assert!(
        elapsed < timeout + Duration::from_secs(10),
        "once took {elapsed:?} with a {timeout:?} scrape timeout"
    );
    eprintln!("once via {transport} against 50 nodes took {elapsed:?}");

    let puts = sandbox.put_metric_data();
    assert!(!puts.is_empty(), "nothing was published: {stderr}");
    let datums = published_datums(&puts);
    let fleet = sandbox.sandbox.fleet();
    for (family, metric) in GAUGES {
        let published = cluster_value(&datums, CLUSTER_ID, metric)
            .unwrap_or_else(|| panic!("{metric} was not published"));
        assert_close(published, fleet.expected_gauge_sum(family), metric);
    }
    assert_eq!(
        cluster_value(&datums, CLUSTER_ID, "podsScraped"),
        Some(47.0)
    );
    assert_eq!(
        cluster_value(&datums, CLUSTER_ID, "scrapeErrors"),
        Some(3.0)
    );
    // One round: counters are seen for the first time, so their deltas are 0.
    assert_eq!(cluster_value(&datums, CLUSTER_ID, "addReqCount"), Some(0.0));
    for datum in &datums {
        let expected_unit = if datum.name == "awsAPILatency" {
            "Milliseconds"
        } else {
            "Count"
        };
        assert_eq!(datum.unit, expected_unit, "unit of {}", datum.name);
        assert_ne!(datum.timestamp, "null", "{} has no timestamp", datum.name);
    }
    let timestamps: BTreeSet<&str> = datums
        .iter()
        .map(|datum| datum.timestamp.as_str())
        .collect();
    assert_eq!(
        timestamps.len(),
        1,
        "one round, one timestamp: {timestamps:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn once_through_the_pods_proxy_survives_hung_erroring_and_garbage_nodes() {
    once_against_a_partly_broken_fleet("proxy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn once_direct_to_the_nodes_survives_hung_erroring_and_garbage_nodes() {
    once_against_a_partly_broken_fleet("direct").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstreams_env_with_only_aws_default_region_publishes_there() {
    let sandbox = start_sandbox(3).await;
    let region = sandbox.sandbox.region().to_owned();
    let mut command = sandbox.publisher(&["once"]);
    // Upstream's stock environment with the cluster id filled in and the region only in
    // AWS_DEFAULT_REGION; nothing else names a region (env cleared, IMDS disabled).
    command
        .env_remove("AWS_REGION")
        .env("AWS_DEFAULT_REGION", &region)
        .env("AWS_CLUSTER_ID", "upstream-env")
        .env("AWS_VPC_K8S_CNI_LOGLEVEL", "INFO")
        .env("USE_CLOUDWATCH", "true")
        .env("USE_PROMETHEUS", "false")
        .env("METRIC_UPDATE_INTERVAL", "30")
        .env("HTTP_TIMEOUT", "10s");
    let output = command.output().await.expect("the publisher runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "once failed: {stderr}");
    let puts = sandbox.put_metric_data();
    assert!(!puts.is_empty(), "nothing was published: {stderr}");
    let scope = format!("/{region}/monitoring/aws4_request");
    for put in &puts {
        let authorization = put
            .headers
            .get("authorization")
            .cloned()
            .unwrap_or_default();
        assert!(
            authorization.contains(&scope),
            "signed for another region: {authorization}"
        );
    }
    let datums = published_datums(&puts);
    assert_eq!(
        cluster_value(&datums, "upstream-env", "podsScraped"),
        Some(3.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_body_fails_only_that_pod() {
    let sandbox = start_sandbox(4).await;
    sandbox.fault(&[(1, Fault::Oversized(200_000))]);
    let output = sandbox
        .publisher(&["once", "--dry-run", "--scrape-body-limit", "100KiB"])
        .output()
        .await
        .expect("the publisher runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "once --dry-run failed: {stderr}");
    let printed: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    let datums = printed["rounds"][0]["datums"].as_array().expect("datums");
    let value_of = |name: &str| {
        datums
            .iter()
            .find(|datum| datum["MetricName"] == name)
            .and_then(|datum| datum["Value"].as_f64())
    };
    assert_eq!(value_of("podsScraped"), Some(3.0));
    assert_eq!(value_of("scrapeErrors"), Some(1.0));
    assert!(stderr.contains("larger than the limit"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn once_dry_run_prints_the_round_and_calls_no_cloudwatch() {
    let sandbox = start_sandbox(5).await;
    let output = sandbox
        .publisher(&["once", "--dry-run", "--per-az"])
        .output()
        .await
        .expect("the publisher runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "once --dry-run failed: {stderr}");
    let printed: Value = serde_json::from_slice(&output.stdout).expect("stdout is only JSON");
    let rounds = printed["rounds"].as_array().expect("a rounds list");
    assert_eq!(rounds.len(), 1);
    let datums = rounds[0]["datums"].as_array().expect("a datums list");
    let fleet = sandbox.sandbox.fleet();
    let cluster_only = |datum: &&Value| {
        datum["Dimensions"] == serde_json::json!([{"Name": "CLUSTER_ID", "Value": CLUSTER_ID}])
    };
    for (family, metric) in GAUGES {
        let datum = datums
            .iter()
            .filter(cluster_only)
            .find(|datum| datum["MetricName"] == metric)
            .unwrap_or_else(|| panic!("{metric} is printed"));
        assert_eq!(datum["Unit"], "Count");
        assert_close(
            datum["Value"].as_f64().expect("a number"),
            fleet.expected_gauge_sum(family),
            metric,
        );
    }
    let pods_scraped = datums
        .iter()
        .find(|datum| datum["MetricName"] == "podsScraped")
        .expect("podsScraped is printed");
    assert_eq!(pods_scraped["Value"], 5.0);
    // --per-az: the capacity metrics per zone, from the Nodes' topology label.
    let zones: BTreeSet<String> = datums
        .iter()
        .filter(|datum| datum["MetricName"] == "maxIPAddresses")
        .filter_map(|datum| {
            datum["Dimensions"]
                .as_array()?
                .iter()
                .find(|dimension| dimension["Name"] != "CLUSTER_ID")
                .and_then(|dimension| dimension["Value"].as_str())
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        zones,
        ["us-west-2a", "us-west-2b", "us-west-2c"]
            .map(str::to_owned)
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
    assert!(
        sandbox.cloudwatch_requests().is_empty(),
        "a dry run called CloudWatch"
    );
}

/// The datums of the one round a `once --dry-run` or `aggregate` printed, each as its JSON
/// text (name, value, unit and dimensions; the JSON has no timestamps), sorted.
fn printed_datums(output: &std::process::Output, command: &str) -> Vec<String> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{command} failed: {stderr}");
    let printed: Value = serde_json::from_slice(&output.stdout).expect("stdout is only JSON");
    let rounds = printed["rounds"].as_array().expect("a rounds list");
    assert_eq!(rounds.len(), 1, "{command} printed {} rounds", rounds.len());
    let mut datums: Vec<String> = rounds[0]["datums"]
        .as_array()
        .expect("a datums list")
        .iter()
        .map(Value::to_string)
        .collect();
    datums.sort();
    datums
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn once_dry_run_and_aggregate_print_the_same_datums_for_the_same_scrapes() {
    let sandbox = start_sandbox(6).await;
    // A failed scrape and a body that does not parse, so that both self-metrics count.
    sandbox.fault(&[(2, Fault::Http500), (4, Fault::Garbage)]);
    let output = sandbox
        .publisher(&["once", "--dry-run", "--per-az"])
        .output()
        .await
        .expect("the publisher runs");
    let live = printed_datums(&output, "once --dry-run");

    // The same scrapes as a round directory: each pod's file holds exactly what its node
    // served, in a subdirectory named for the node's zone. A file that is not UTF-8 is the
    // offline form of a failed scrape.
    let round = sandbox.dir.path().join("round-1");
    for node in sandbox.sandbox.fleet().nodes() {
        let zone = round.join(node.zone());
        std::fs::create_dir_all(&zone).expect("a zone directory");
        let body = match node.fault() {
            Fault::None => node
                .last_served()
                .expect("a healthy node served its exposition")
                .body
                .into_bytes(),
            Fault::Garbage => http_get(&node.address().to_string(), "/metrics")
                .await
                .1
                .into_bytes(),
            Fault::Http500 => vec![0xff, 0xfe],
            other @ (Fault::Slow(_)
            | Fault::Hang
            | Fault::Oversized(_)
            | Fault::ExtremeValues
            | Fault::SlowBody { .. }
            | Fault::ManySeries(_)) => {
                panic!("this test sets no {other:?} fault")
            }
        };
        std::fs::write(zone.join(node.pod_name()), body).expect("a pod file");
    }
    let round_dir = round.display().to_string();
    let output = sandbox
        .publisher(&["aggregate", "--round", &round_dir, "--per-az"])
        .output()
        .await
        .expect("the publisher runs");
    let offline = printed_datums(&output, "aggregate");

    assert_eq!(live, offline, "once --dry-run and aggregate disagree");
    // The comparison covers the self-metrics and the per-zone datums.
    for (name, value) in [("podsScraped", 4.0), ("scrapeErrors", 2.0)] {
        let expected = serde_json::json!({"MetricName": name, "Value": value, "Unit": "Count",
            "Dimensions": [{"Name": "CLUSTER_ID", "Value": CLUSTER_ID}]})
        .to_string();
        assert!(
            offline.contains(&expected),
            "{expected} missing: {offline:#?}"
        );
    }
    assert!(
        offline
            .iter()
            .any(|datum| datum.contains(r#""Name":"AvailabilityZone""#)),
        "no per-zone datum: {offline:#?}"
    );
}

/// A `run` process with its stderr collected line by line.
pub(crate) struct RunningPublisher {
    child: Child,
    pub(crate) pid: u32,
    log: Arc<Mutex<Vec<String>>>,
}

impl RunningPublisher {
    pub(crate) fn start(mut command: Command) -> RunningPublisher {
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("the publisher starts");
        let pid = child.id().expect("a running child has a PID");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&log);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().expect("log lock").push(line);
            }
        });
        RunningPublisher { child, pid, log }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// Waits for a log line containing `needle` and returns it.
    pub(crate) async fn wait_for_log(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self
                .log
                .lock()
                .expect("log lock")
                .iter()
                .find(|line| line.contains(needle))
            {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within {within:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a signal to this child, by its PID.
    pub(crate) fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args(["-s", signal, &self.pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -s {signal} {} failed", self.pid);
    }

    pub(crate) async fn wait(&mut self, within: Duration) -> ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.expect("waiting for the child works"),
            Err(_) => panic!(
                "the publisher did not exit within {within:?}:\n{}",
                self.log()
            ),
        }
    }
}

/// GETs a path from the publisher's endpoint: (status, body).
pub(crate) async fn http_get(address: &str, path: &str) -> (u16, String) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let uri: http::Uri = format!("http://{address}{path}")
        .parse()
        .expect("a valid URI");
    let response = client.get(uri).await.expect("the endpoint answers");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the body is readable")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Polls until `condition` holds, failing with `what` after `within`.
pub(crate) async fn eventually(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_publishes_every_round_serves_metrics_and_stops_on_sigterm() {
    let sandbox = start_sandbox(6).await;
    let mut publisher = RunningPublisher::start(sandbox.publisher(&[
        "run",
        "--interval",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--scrape-via",
        "direct",
    ]));
    let address = served_address(&publisher, Duration::from_secs(20)).await;
    assert_eq!(http_get(&address, "/healthz").await.0, 200);

    // Three rounds published: podsScraped appears once per round.
    eventually(Duration::from_secs(30), "three published rounds", || {
        published_datums(&sandbox.put_metric_data())
            .iter()
            .filter(|datum| datum.name == "podsScraped")
            .count()
            >= 3
    })
    .await;
    assert_eq!(http_get(&address, "/readyz").await.0, 200);
    let (status, metrics) = http_get(&address, "/metrics").await;
    assert_eq!(status, 200);
    let expected_line = format!("cni_metrics_podsScraped{{cluster_id=\"{CLUSTER_ID}\"}} 6");
    assert!(metrics.contains(&expected_line), "{metrics}");
    assert!(
        metrics.contains("# TYPE cni_metrics_assignIPAddresses gauge"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cni_metrics_scrapeErrors{cluster_id=\"e2e-cluster\"} 0"),
        "{metrics}"
    );
    // Upstream's unlabelled series hold the same cluster totals (the fleet's gauges do not
    // change between rounds).
    let fleet = sandbox.sandbox.fleet();
    for (family, _) in GAUGES {
        let line = format!("\n{family} {}\n", fleet.expected_gauge_sum(family));
        assert!(metrics.contains(&line), "{line:?} missing from:\n{metrics}");
        assert!(
            metrics.contains(&format!("# TYPE {family} gauge\n")),
            "{metrics}"
        );
    }

    publisher.signal("TERM");
    let status = publisher.wait(Duration::from_secs(15)).await;
    assert!(
        status.success(),
        "exit after SIGTERM: {status:?}\n{}",
        publisher.log()
    );

    // One datum per metric per round, every datum stamped with its round's time.
    let datums = published_datums(&sandbox.put_metric_data());
    let mut rounds: BTreeMap<&str, Vec<&PublishedDatum>> = BTreeMap::new();
    for datum in &datums {
        rounds
            .entry(datum.timestamp.as_str())
            .or_default()
            .push(datum);
    }
    assert!(rounds.len() >= 3, "{} rounds", rounds.len());
    for (timestamp, round) in &rounds {
        let mut seen = BTreeSet::new();
        for datum in round {
            assert!(
                seen.insert((datum.name.as_str(), &datum.dimensions)),
                "{} published twice in the round at {timestamp}",
                datum.name
            );
        }
        assert!(seen.iter().any(|(name, _)| *name == "podsScraped"));
        assert!(seen.iter().any(|(name, _)| *name == "assignIPAddresses"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn self_metrics_false_keeps_them_off_cloudwatch_but_on_metrics_and_in_the_log() {
    let sandbox = start_sandbox(4).await;
    let mut publisher = RunningPublisher::start(sandbox.publisher(&[
        "run",
        "--interval",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--scrape-via",
        "direct",
        "--self-metrics",
        "false",
    ]));
    let address = served_address(&publisher, Duration::from_secs(20)).await;
    eventually(Duration::from_secs(30), "two published rounds", || {
        published_datums(&sandbox.put_metric_data())
            .iter()
            .filter(|datum| datum.name == "assignIPAddresses")
            .count()
            >= 2
    })
    .await;
    let (status, metrics) = http_get(&address, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(&format!(
            "cni_metrics_podsScraped{{cluster_id=\"{CLUSTER_ID}\"}} 4\n"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("cni_metrics_scrapeErrors{"), "{metrics}");
    publisher.signal("TERM");
    let status = publisher.wait(Duration::from_secs(15)).await;
    assert!(
        status.success(),
        "exit after SIGTERM: {status:?}\n{}",
        publisher.log()
    );
    assert!(
        publisher.log().contains("pods_scraped=4"),
        "{}",
        publisher.log()
    );
    let names: BTreeSet<String> = published_datums(&sandbox.put_metric_data())
        .into_iter()
        .map(|datum| datum.name)
        .collect();
    assert!(names.contains("totalIPAddresses"), "{names:?}");
    assert!(!names.contains("podsScraped"), "{names:?}");
    assert!(!names.contains("scrapeErrors"), "{names:?}");
}

pub(crate) fn lease_holder(sandbox: &TestSandbox, name: &str) -> Option<String> {
    sandbox
        .sandbox
        .api()
        .get_json("coordination.k8s.io/v1", "Lease", Some("default"), name)?
        .pointer("/spec/holderIdentity")?
        .as_str()
        .map(str::to_owned)
}

fn rounds_published_for(sandbox: &TestSandbox, cluster: &str) -> usize {
    published_datums(&sandbox.put_metric_data())
        .iter()
        .filter(|datum| {
            datum.name == "podsScraped"
                && datum.dimensions.get("CLUSTER_ID").map(String::as_str) == Some(cluster)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_election_lets_only_one_replica_publish_and_fails_over() {
    let sandbox = start_sandbox(3).await;
    const LEASE: &str = "cni-metrics-publisher";
    // Each replica publishes under its own cluster id, so the request log shows who
    // published; they share one Lease.
    let replica = |cluster: &str, identity: &str| {
        let mut command = sandbox.publisher(&[
            "run",
            "--interval",
            "1",
            "--leader-elect",
            "--lease-duration",
            "2s",
            "--lease-namespace",
            "default",
            "--leader-identity",
            identity,
            "--cluster-id",
            cluster,
        ]);
        command.env("AWS_VPC_K8S_CNI_LOGLEVEL", "DEBUG");
        RunningPublisher::start(command)
    };
    let mut first = replica("cluster-a", "replica-a");
    eventually(Duration::from_secs(20), "replica a to lead", || {
        lease_holder(&sandbox, LEASE).is_some_and(|holder| holder.starts_with("replica-a_"))
    })
    .await;
    let mut second = replica("cluster-b", "replica-b");
    second
        .wait_for_log("standing by", Duration::from_secs(20))
        .await;
    eventually(
        Duration::from_secs(20),
        "replica a to publish 3 rounds",
        || rounds_published_for(&sandbox, "cluster-a") >= 3,
    )
    .await;
    assert_eq!(
        rounds_published_for(&sandbox, "cluster-b"),
        0,
        "the standby published:\n{}",
        second.log()
    );

    // The leader dies without releasing: the standby takes over once the lease expires.
    first.signal("KILL");
    let killed_at = Instant::now();
    first.wait(Duration::from_secs(10)).await;
    eventually(Duration::from_secs(20), "replica b to take over", || {
        lease_holder(&sandbox, LEASE).is_some_and(|holder| holder.starts_with("replica-b_"))
    })
    .await;
    let takeover = killed_at.elapsed();
    assert!(
        takeover >= Duration::from_secs(1),
        "replica b took over after {takeover:?}, before the 2 s lease could expire"
    );
    eprintln!("failover took {takeover:?} with a 2 s lease");
    let published_by_a = rounds_published_for(&sandbox, "cluster-a");
    eventually(Duration::from_secs(20), "replica b to publish", || {
        rounds_published_for(&sandbox, "cluster-b") >= 2
    })
    .await;
    assert_eq!(rounds_published_for(&sandbox, "cluster-a"), published_by_a);

    // A graceful stop releases the Lease.
    second.signal("TERM");
    let status = second.wait(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{}", second.log());
    assert_eq!(
        lease_holder(&sandbox, LEASE),
        None,
        "the Lease was not released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_abandons_a_round_stuck_on_a_hung_node() {
    let sandbox = start_sandbox(3).await;
    sandbox.fault(&[(0, Fault::Hang)]);
    let mut publisher = RunningPublisher::start(sandbox.publisher(&[
        "run",
        "--scrape-timeout",
        "60s",
        "--scrape-via",
        "direct",
        "--log-level",
        "debug",
    ]));
    // The two healthy nodes answered, so the round now waits only for the hung one.
    eventually(
        Duration::from_secs(20),
        "the healthy nodes to be scraped",
        || {
            let fleet = sandbox.sandbox.fleet();
            fleet.node(1).scrape_count() >= 1 && fleet.node(2).scrape_count() >= 1
        },
    )
    .await;
    let signalled = Instant::now();
    publisher.signal("TERM");
    let status = publisher.wait(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{}", publisher.log());
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "shutdown waited for the hung node"
    );
    assert!(
        publisher.log().contains("abandoned the round"),
        "{}",
        publisher.log()
    );
    assert!(
        sandbox.put_metric_data().is_empty(),
        "an abandoned round was published"
    );
}

/// The names of the datums of each published round, keyed by the round's timestamp.
fn published_rounds(sandbox: &TestSandbox) -> BTreeMap<String, Vec<String>> {
    let mut rounds: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for datum in published_datums(&sandbox.put_metric_data()) {
        rounds.entry(datum.timestamp).or_default().push(datum.name);
    }
    rounds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn values_cloudwatch_refuses_cost_only_their_own_datums() {
    let sandbox = start_sandbox(1).await;
    // The names a round of this one-node cluster publishes when nothing is wrong.
    let dry_run = sandbox
        .publisher(&["once", "--dry-run", "--scrape-via", "direct"])
        .output()
        .await
        .expect("the dry run runs");
    assert!(dry_run.status.success(), "{dry_run:?}");
    let healthy: BTreeSet<String> = serde_json::from_slice::<Value>(&dry_run.stdout)
        .expect("the dry run prints JSON")["rounds"][0]["datums"]
        .as_array()
        .expect("datums")
        .iter()
        .map(|datum| datum["MetricName"].as_str().unwrap_or_default().to_owned())
        .collect();
    for name in ["assignIPAddresses", "totalIPAddresses", "podsScraped"] {
        assert!(healthy.contains(name), "{name} missing: {healthy:?}");
    }

    // The only pod now exposes 1e+200 and 1e-200 for the two gauges: CloudWatch refuses
    // both sums.
    sandbox.fault(&[(0, Fault::ExtremeValues)]);
    let mut publisher = RunningPublisher::start(sandbox.publisher(&[
        "run",
        "--interval",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--scrape-via",
        "direct",
    ]));
    let address = served_address(&publisher, Duration::from_secs(20)).await;
    eventually(Duration::from_secs(30), "two published rounds", || {
        published_rounds(&sandbox).len() >= 2
    })
    .await;
    let (status, metrics) = http_get(&address, "/metrics").await;
    assert_eq!(status, 200);
    let rejected: f64 = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix("cni_metrics_publisher_cloudwatch_rejected_datums_total ")
        })
        .unwrap_or_else(|| panic!("no rejected counter:\n{metrics}"))
        .parse()
        .expect("the counter is a number");
    let rounds_total: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("cni_metrics_publisher_rounds_total "))
        .expect("the rounds counter")
        .parse()
        .expect("a number");
    assert_eq!(rejected, 2.0 * rounds_total, "{metrics}");
    publisher.signal("TERM");
    let status = publisher.wait(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{}", publisher.log());

    let expected: BTreeSet<String> = healthy
        .iter()
        .filter(|name| !matches!(name.as_str(), "assignIPAddresses" | "totalIPAddresses"))
        .cloned()
        .collect();
    for (timestamp, names) in published_rounds(&sandbox) {
        let published: BTreeSet<String> = names.iter().cloned().collect();
        assert_eq!(
            published.len(),
            names.len(),
            "a datum was sent twice at {timestamp}"
        );
        // Later rounds may add the latency, which needs two rounds of counters.
        assert!(
            expected.is_subset(&published),
            "the round at {timestamp} lost {:?}",
            expected.difference(&published).collect::<Vec<_>>()
        );
        assert!(
            !published.contains("assignIPAddresses") && !published.contains("totalIPAddresses"),
            "an out-of-range value was sent at {timestamp}"
        );
    }
    let log = publisher.log();
    for name in ["assignIPAddresses", "totalIPAddresses"] {
        assert!(
            log.lines()
                .any(|line| line.contains("left this value out") && line.contains(name)),
            "no warning names {name}:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_batch_is_split_so_only_the_invalid_datums_are_lost() {
    use cni_metrics_publisher::cloudwatch::CloudWatchPublisher;
    use cni_metrics_publisher::datum::{Datum, Dimension, Unit};

    let sandbox = start_sandbox(1).await;
    let emulator = sandbox.sandbox.emulator().expect("an emulator");
    let publisher = CloudWatchPublisher::new(
        &emulator.sdk_config(sandbox.sandbox.region()),
        "Kubernetes",
        20_000,
        1000,
        1_000_000,
    );
    // 1000 datums in one batch; two of them (not neighbours) hold values CloudWatch
    // refuses. The queue itself only leaves out NaN and infinities, so these reach
    // CloudWatch, as a value the range check missed would.
    let timestamp = std::time::SystemTime::now();
    let datums: Vec<Datum> = (0..1000)
        .map(|index| Datum {
            metric_name: format!("m{index}"),
            value: match index {
                137 => 1e200,
                802 => 1e-200,
                _ => index as f64,
            },
            unit: Unit::Count,
            dimensions: vec![Dimension {
                name: "CLUSTER_ID".to_owned(),
                value: CLUSTER_ID.to_owned(),
            }],
            timestamp,
        })
        .collect();
    publisher.enqueue(datums);
    let report = publisher.flush().await.expect("the flush completes");
    assert_eq!(report.datums_sent, 998, "{report:?}");
    assert_eq!(report.datums_rejected, 2, "{report:?}");
    assert_eq!(publisher.rejected_total(), 2);
    assert_eq!(publisher.queued(), 0);
    // Bisection: two refused datums in 1000 cost about 2 * 2 * log2(1000) calls.
    assert!(report.calls <= 50, "{report:?}");

    let stored: Vec<String> = published_datums(&sandbox.put_metric_data())
        .into_iter()
        .map(|datum| datum.name)
        .collect();
    let unique: BTreeSet<&str> = stored.iter().map(String::as_str).collect();
    assert_eq!(unique.len(), stored.len(), "a datum was stored twice");
    let expected: BTreeSet<String> = (0..1000)
        .filter(|index| !matches!(index, 137 | 802))
        .map(|index| format!("m{index}"))
        .collect();
    assert_eq!(
        unique,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_cloudwatch_never_delays_rounds_and_gets_every_round_afterwards() {
    const HANG: Duration = Duration::from_secs(30);
    let sandbox = start_sandbox(3).await;
    let emulator = sandbox.sandbox.emulator().expect("an emulator");
    let mut publisher = RunningPublisher::start(sandbox.publisher(&[
        "run",
        "--interval",
        "1",
        "--scrape-via",
        "direct",
    ]));
    eventually(Duration::from_secs(30), "a first published round", || {
        !published_rounds(&sandbox).is_empty()
    })
    .await;
    let rounds_before = publisher.log().matches("round done").count();
    emulator
        .hang_cloudwatch(HANG)
        .await
        .expect("the hang knob answers");
    let hang_started = Instant::now();
    tokio::time::sleep(HANG).await;
    let rounds_during = publisher.log().matches("round done").count() - rounds_before;
    // 30 rounds are due at 1 s; a loaded machine may lose some, a held round loop would
    // manage about one per 30 s call.
    assert!(
        rounds_during >= 20,
        "only {rounds_during} rounds during a {HANG:?} CloudWatch hang:\n{}",
        publisher.log()
    );
    let rounds_by_now = publisher.log().matches("round done").count();
    // Once CloudWatch answers, every round done so far arrives, each with its own
    // timestamp. The SDK's attempt timeout is 10 s, so the held call gives up by then.
    eventually(
        Duration::from_secs(45),
        "every round to be published after the hang",
        || published_rounds(&sandbox).len() >= rounds_by_now,
    )
    .await;
    eprintln!(
        "{rounds_during} rounds during the hang; caught up {:?} after it began",
        hang_started.elapsed()
    );
    publisher.signal("TERM");
    let status = publisher.wait(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}\n{}", publisher.log());

    let rounds = published_rounds(&sandbox);
    let mut timestamps: Vec<f64> = Vec::new();
    for (timestamp, names) in &rounds {
        let unique: BTreeSet<&String> = names.iter().collect();
        assert_eq!(
            unique.len(),
            names.len(),
            "the round at {timestamp} was sent twice"
        );
        assert!(names.iter().any(|name| name == "podsScraped"), "{names:?}");
        timestamps.push(timestamp.parse().expect("timestamps are epoch seconds"));
    }
    timestamps.sort_by(f64::total_cmp);
    // The rounds kept their cadence: no gap near the hang's length between two rounds.
    let widest_gap = timestamps
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .fold(0.0, f64::max);
    assert!(
        widest_gap < 10.0,
        "rounds {widest_gap} s apart: the hang held the round loop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_bounds_the_final_flush_to_a_hung_cloudwatch() {
    let sandbox = start_sandbox(1).await;
    let emulator = sandbox.sandbox.emulator().expect("an emulator");
    let mut publisher = RunningPublisher::start(sandbox.publisher(&[
        "run",
        "--interval",
        "1",
        "--scrape-via",
        "direct",
        "--shutdown-timeout",
        "3s",
    ]));
    eventually(Duration::from_secs(30), "a first published round", || {
        !published_rounds(&sandbox).is_empty()
    })
    .await;
    emulator
        .hang_cloudwatch(Duration::from_secs(300))
        .await
        .expect("the hang knob answers");
    // A few rounds queue up while the upload task waits on the hung call.
    let rounds_before = publisher.log().matches("round done").count();
    eventually(
        Duration::from_secs(30),
        "three rounds during the hang",
        || publisher.log().matches("round done").count() >= rounds_before + 3,
    )
    .await;
    let signalled = Instant::now();
    publisher.signal("TERM");
    let status = publisher.wait(Duration::from_secs(30)).await;
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}\n{}", publisher.log());
    // 3 s of flushing plus the rest of shutdown; without the bound the call in flight
    // would hold it for up to the SDK's 30 s per call.
    assert!(
        took < Duration::from_secs(15),
        "shutdown took {took:?} with --shutdown-timeout 3s"
    );
    assert!(
        publisher.log().contains("did not finish within"),
        "{}",
        publisher.log()
    );
}

/// The address the publisher's endpoint listens on, from its "serving /metrics" log line.
pub(crate) async fn served_address(publisher: &RunningPublisher, within: Duration) -> String {
    let line = publisher.wait_for_log("serving /metrics", within).await;
    line.split_whitespace()
        .find_map(|word| word.strip_prefix("address="))
        .expect("the log line names the address")
        .to_owned()
}
