//! The `cloudwatch` scenario: rounds published to the AWS emulator, each flushed at once,
//! then a backlog flushed in one go, counting the PutMetricData calls from the emulator's
//! request recording.

use cni_metrics_publisher::cloudwatch::{
    CloudWatchPublisher, MAX_BYTES_PER_CALL, MAX_DATUMS_PER_CALL,
};
use sandbox::bench_report::CloudWatchReport;

use crate::fleet::FleetChild;
use crate::rounds::Publisher;
use sandbox::fleet::NodeListeners;

pub(crate) async fn run(
    nodes: usize,
    rounds: usize,
    backlog_rounds: usize,
) -> anyhow::Result<CloudWatchReport> {
    let mut fleet = FleetChild::start(nodes, NodeListeners::PerNode).await?;
    let mut publisher = Publisher::with_defaults(&fleet.ready.kubeconfig).await?;
    let sdk_config =
        sandbox::aws_emulator::sdk_config_for(&fleet.ready.aws_endpoint, &fleet.ready.region);
    let cloudwatch = CloudWatchPublisher::new(
        &sdk_config,
        cni_metrics_publisher::CLOUDWATCH_NAMESPACE,
        20_000,
        MAX_DATUMS_PER_CALL,
        MAX_BYTES_PER_CALL,
    );
    fleet.clear_aws_recording().await?;

    // Steady state: each round is flushed at once, as `run` does.
    let mut round_datums = Vec::new();
    let mut round_calls = Vec::new();
    for _ in 0..rounds {
        let datums = publisher.round_datums(None).await.0;
        round_datums.push(datums.len());
        cloudwatch.enqueue(datums);
        round_calls.push(cloudwatch.flush().await?.calls);
    }
    let steady = fleet.aws_recording().await?;
    fleet.clear_aws_recording().await?;

    // A backlog: rounds queued while CloudWatch was unreachable, flushed in one go.
    let mut backlog_datums = 0;
    for _ in 0..backlog_rounds {
        let datums = publisher.round_datums(None).await.0;
        backlog_datums += datums.len();
        cloudwatch.enqueue(datums);
    }
    let backlog_report = cloudwatch.flush().await?;
    let backlog = fleet.aws_recording().await?;
    fleet.stop().await?;
    Ok(CloudWatchReport {
        nodes,
        round_datums,
        round_calls,
        steady_recorded: steady,
        backlog_rounds,
        backlog_datums,
        backlog_calls: backlog_report.calls,
        backlog_recorded: backlog,
    })
}
