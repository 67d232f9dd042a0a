//! At most one leader acts at any time (README "Leader election"), shown with the real
//! binary: two replicas with their own kubeconfigs (bearer tokens), so that the fake API
//! server can hang, then fail, the Lease requests of the leader alone, as an overloaded or
//! partitioned API server does; the AWS emulator records when each PutMetricData arrived.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use sandbox::aws_emulator::RecordedRequest;
use sandbox::fleet::Fault;
use sandbox::kube_api::ClientFaultBehaviour;
use serde_json::Value;
use tempfile::TempDir;

use crate::e2e::{RunningPublisher, TestSandbox, eventually, lease_holder, start_sandbox};

const LEASE: &str = "cni-metrics-publisher";
/// The Lease requests of a replica: every path of the coordination API.
const LEASE_PATHS: &str = "/apis/coordination.k8s.io/";
const LEASE_DURATION: Duration = Duration::from_secs(3);
/// Two thirds of the lease: how long a leader may go without a successful renewal.
const RENEW_DEADLINE: Duration = Duration::from_secs(2);
/// A fifth of the lease: how often a replica tries.
const RETRY_PERIOD: Duration = Duration::from_millis(600);
const INTERVAL: Duration = Duration::from_secs(1);

/// One replica: its own bearer token, Lease identity and CLUSTER_ID (so the emulator's
/// recording tells whose datums a call carried).
struct Replica {
    token: &'static str,
    cluster: &'static str,
    identity: &'static str,
}

const REPLICA_A: Replica = Replica {
    token: "token-replica-a",
    cluster: "cluster-a",
    identity: "replica-a",
};
const REPLICA_B: Replica = Replica {
    token: "token-replica-b",
    cluster: "cluster-b",
    identity: "replica-b",
};

/// Starts `replica` with leader election on the shared Lease and its own kubeconfig in
/// `dir`, plus `extra` flags.
fn start_replica(
    sandbox: &TestSandbox,
    dir: &TempDir,
    replica: &Replica,
    extra: &[&str],
) -> RunningPublisher {
    let kubeconfig = dir.path().join(format!("{}.kubeconfig", replica.identity));
    std::fs::write(
        &kubeconfig,
        sandbox.sandbox.api().kubeconfig_yaml_for(replica.token),
    )
    .expect("the replica's kubeconfig is written");
    let lease_duration = format!("{}s", LEASE_DURATION.as_secs());
    let mut args = vec![
        "run",
        "--leader-elect",
        "--lease-duration",
        &lease_duration,
        "--lease-namespace",
        "default",
        "--leader-identity",
        replica.identity,
        "--cluster-id",
        replica.cluster,
    ];
    args.extend_from_slice(extra);
    let mut command = sandbox.publisher(&args);
    command
        .env("KUBECONFIG", &kubeconfig)
        .env("AWS_VPC_K8S_CNI_LOGLEVEL", "DEBUG");
    RunningPublisher::start(command)
}

fn holder_is(sandbox: &TestSandbox, replica: &Replica) -> bool {
    lease_holder(sandbox, LEASE).is_some_and(|holder| holder.starts_with(replica.identity))
}

/// When each PutMetricData of `replica` arrived, in order.
fn calls_of(sandbox: &TestSandbox, replica: &Replica) -> Vec<SystemTime> {
    let mut times: Vec<SystemTime> = sandbox
        .put_metric_data()
        .iter()
        .filter(|request| call_cluster(request).as_deref() == Some(replica.cluster))
        .map(|request| {
            request
                .received_at()
                .expect("the emulator records when a CloudWatch call arrived")
        })
        .collect();
    times.sort();
    times
}

/// The CLUSTER_ID of a PutMetricData call (every datum of a call has the replica's).
fn call_cluster(request: &RecordedRequest) -> Option<String> {
    let body: Value = serde_json::from_slice(&request.body).ok()?;
    let dimensions = body.pointer("/MetricData/0/Dimensions")?.as_array()?;
    let by_name: BTreeMap<&str, &str> = dimensions
        .iter()
        .filter_map(|dimension| {
            Some((
                dimension.get("Name")?.as_str()?,
                dimension.get("Value")?.as_str()?,
            ))
        })
        .collect();
    by_name.get("CLUSTER_ID").map(|value| (*value).to_owned())
}

/// The Lease requests the fake API server answered for `replica`.
fn lease_requests(sandbox: &TestSandbox, replica: &Replica) -> usize {
    sandbox
        .sandbox
        .api()
        .requests()
        .iter()
        .filter(|request| {
            request.token.as_deref() == Some(replica.token) && request.path.starts_with(LEASE_PATHS)
        })
        .count()
}

/// Replica a leading and publishing (3 calls), replica b standing by, at [`INTERVAL`].
async fn leader_and_standby(
    sandbox: &TestSandbox,
    dir: &TempDir,
) -> (RunningPublisher, RunningPublisher) {
    let interval = INTERVAL.as_secs().to_string();
    let first = start_replica(sandbox, dir, &REPLICA_A, &["--interval", &interval]);
    eventually(Duration::from_secs(20), "replica a to lead", || {
        holder_is(sandbox, &REPLICA_A)
    })
    .await;
    let second = start_replica(sandbox, dir, &REPLICA_B, &["--interval", &interval]);
    second
        .wait_for_log("standing by", Duration::from_secs(20))
        .await;
    eventually(
        Duration::from_secs(20),
        "replica a to publish 3 times",
        || calls_of(sandbox, &REPLICA_A).len() >= 3,
    )
    .await;
    (first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_off_from_its_lease_stops_before_the_standby_starts() {
    let sandbox = start_sandbox(3).await;
    let dir = tempfile::tempdir().expect("a temp dir for the kubeconfigs");
    let (first, second) = leader_and_standby(&sandbox, &dir).await;

    // The API server stops answering the leader's Lease requests (and only those: its
    // scrapes through the pods proxy and the other replica are served as before).
    let api = sandbox.sandbox.api();
    api.set_client_fault(
        REPLICA_A.token,
        LEASE_PATHS,
        Some(ClientFaultBehaviour::Hang),
    );
    let cut_off = Instant::now();
    first
        .wait_for_log(
            "no successful Lease renewal within the renew deadline",
            Duration::from_secs(10),
        )
        .await;
    let stopped_after = cut_off.elapsed();
    eventually(Duration::from_secs(20), "replica b to take over", || {
        holder_is(&sandbox, &REPLICA_B)
    })
    .await;
    let taken_over_after = cut_off.elapsed();

    // Then it answers them 503, as an overloaded server does: every attempt is one request
    // (the held ones are answered now too), not a burst of client retries.
    api.set_client_fault(
        REPLICA_A.token,
        LEASE_PATHS,
        Some(ClientFaultBehaviour::Fail(503)),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let requests_before = lease_requests(&sandbox, &REPLICA_A);
    let window = Duration::from_secs(3);
    tokio::time::sleep(window).await;
    let requests_in_window = lease_requests(&sandbox, &REPLICA_A) - requests_before;
    let most_attempts = (window.as_millis() / RETRY_PERIOD.as_millis()) as usize + 2;
    assert!(
        requests_in_window <= most_attempts,
        "replica a sent {requests_in_window} Lease requests in {window:?} of 503s; one per \
         attempt every {RETRY_PERIOD:?} allows {most_attempts}: the client retried"
    );
    first
        .wait_for_log("HTTP status 503", Duration::from_secs(5))
        .await;

    eventually(
        Duration::from_secs(20),
        "replica b to publish 3 times",
        || calls_of(&sandbox, &REPLICA_B).len() >= 3,
    )
    .await;
    // The API server recovers: the former leader stands by and stays silent.
    api.set_client_fault(REPLICA_A.token, LEASE_PATHS, None);
    tokio::time::sleep(2 * RETRY_PERIOD + INTERVAL).await;

    let calls_a = calls_of(&sandbox, &REPLICA_A);
    let calls_b = calls_of(&sandbox, &REPLICA_B);
    let (Some(last_a), Some(first_b)) = (calls_a.last(), calls_b.first()) else {
        panic!("both replicas published: a {calls_a:?}, b {calls_b:?}");
    };
    let gap = first_b.duration_since(*last_a).unwrap_or_else(|overlap| {
        panic!(
            "replica b sent its first PutMetricData {:?} before replica a's last one:\n\
                 --- a ---\n{}\n--- b ---\n{}",
            overlap.duration(),
            first.log(),
            second.log()
        )
    });
    eprintln!(
        "replica a stopped {stopped_after:?} after its Lease requests hung (renew deadline \
         {RENEW_DEADLINE:?}); replica b held the Lease after {taken_over_after:?}; \
         {} calls of a, then {} calls of b, {gap:?} apart; {requests_in_window} Lease \
         requests of a in {window:?} of 503s",
        calls_a.len(),
        calls_b.len()
    );
    assert!(
        gap < LEASE_DURATION + INTERVAL,
        "the gap between the two leaders' calls was {gap:?}, not below lease + interval"
    );
    assert!(
        holder_is(&sandbox, &REPLICA_B),
        "replica b lost the Lease once a's requests were answered again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_round_in_flight_when_leadership_ends_is_never_published() {
    let sandbox = start_sandbox(3).await;
    // The hung node holds every round for its whole scrape timeout: 8 s, far longer than
    // the 2 s renew deadline, so leadership ends in the middle of the first round.
    sandbox.sandbox.fleet().node(0).set_fault(Fault::Hang);
    let dir = tempfile::tempdir().expect("a temp dir for the kubeconfig");
    let leader = start_replica(
        &sandbox,
        &dir,
        &REPLICA_A,
        &["--interval", "10", "--scrape-timeout", "8s"],
    );
    leader
        .wait_for_log("became the leader", Duration::from_secs(20))
        .await;
    sandbox.sandbox.api().set_client_fault(
        REPLICA_A.token,
        LEASE_PATHS,
        Some(ClientFaultBehaviour::Hang),
    );
    leader
        .wait_for_log(
            "lost leadership during the round: abandoned it",
            Duration::from_secs(10),
        )
        .await;
    // Past the hung scrape's timeout: an unabandoned round would have ended and published.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let calls = calls_of(&sandbox, &REPLICA_A);
    assert!(
        calls.is_empty(),
        "the former leader published {} times after losing leadership:\n{}",
        calls.len(),
        leader.log()
    );
    sandbox
        .sandbox
        .api()
        .set_client_fault(REPLICA_A.token, LEASE_PATHS, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_former_leader_never_sends_its_backlog_while_the_new_leader_leads() {
    const CLOUDWATCH_HANG: Duration = Duration::from_secs(8);
    let sandbox = start_sandbox(3).await;
    let dir = tempfile::tempdir().expect("a temp dir for the kubeconfigs");
    let (first, _standby) = leader_and_standby(&sandbox, &dir).await;

    // CloudWatch hangs, so the leader's call in flight is held and its rounds queue up;
    // meanwhile it loses its Lease and the standby takes over, queueing too.
    let emulator = sandbox
        .sandbox
        .emulator()
        .expect("the sandbox has an emulator");
    emulator
        .hang_cloudwatch(CLOUDWATCH_HANG)
        .await
        .expect("CloudWatch hangs");
    let hang_started = SystemTime::now();
    sandbox.sandbox.api().set_client_fault(
        REPLICA_A.token,
        LEASE_PATHS,
        Some(ClientFaultBehaviour::Hang),
    );
    eventually(Duration::from_secs(20), "replica b to take over", || {
        holder_is(&sandbox, &REPLICA_B)
    })
    .await;
    // Once CloudWatch answers again, only the new leader sends: its own backlog, then its
    // rounds. The former leader keeps its backlog queued and sends nothing.
    eventually(
        CLOUDWATCH_HANG + Duration::from_secs(20),
        "replica b to publish after the hang",
        || calls_of(&sandbox, &REPLICA_B).len() >= 3,
    )
    .await;
    tokio::time::sleep(2 * INTERVAL).await;
    let late_calls_of_a: Vec<SystemTime> = calls_of(&sandbox, &REPLICA_A)
        .into_iter()
        .filter(|arrived| *arrived >= hang_started)
        .collect();
    assert!(
        late_calls_of_a.is_empty(),
        "the former leader sent {} PutMetricData calls after losing its Lease:\n{}",
        late_calls_of_a.len(),
        first.log()
    );
    let queued_line = first
        .wait_for_log("stay queued until it leads again", Duration::from_secs(5))
        .await;
    eprintln!("replica a: {queued_line}");
    sandbox
        .sandbox
        .api()
        .set_client_fault(REPLICA_A.token, LEASE_PATHS, None);
}
