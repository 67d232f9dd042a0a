//! One round, and the commands built from rounds.
//!
//! A round: take the aws-node pods from the watch cache, scrape them concurrently, parse
//! each body and fold it into cluster values, add the self-metrics `podsScraped` and
//! `scrapeErrors`, then queue for CloudWatch, and refresh `/metrics`. Every datum of a round
//! carries the round's start time. A value CloudWatch would refuse is left out of the round
//! with a warning naming it, and counted.
//!
//! - [`run`]: a round every interval until shutdown (SIGTERM/SIGINT); with leader election
//!   only while leading. Uploads run in their own task, so a slow CloudWatch never delays a
//!   round. On shutdown the round in flight is abandoned, what is queued is flushed within
//!   the shutdown timeout, and the Lease is released.
//! - [`once`]: one round; published, or returned for printing with `--dry-run`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::aggregate::{
    Aggregator, AggregatorOptions, PODS_SCRAPED_METRIC, PodScrape, RoundCounts, RoundStats,
    SCRAPE_ERRORS_METRIC, ScrapeOutcome,
};
use crate::cloudwatch::{CloudWatchPublisher, load_sdk_config};
use crate::config::{LeaderSettings, ScrapeVia, Settings};
use crate::datum::{Datum, Round, Rounds};
use crate::discovery::{DiscoveryError, PodDiscovery, ScrapeTarget};
use crate::leader::{LeaderElector, Leadership, LeadershipState, lease_client, run_election};
use crate::scrape::{ScrapeError, ScrapeResult, Scraper, median_duration, round_time_estimate};
use crate::serve::{PublisherStatus, ServeError, ServeOptions, ServeState, Server};

/// How long `run` waits for the first pod listing before it starts rounds anyway (the
/// rounds then see no pods until the cache fills, and say so in the logs).
const RUN_DISCOVERY_WAIT: Duration = Duration::from_secs(30);
/// How long `once` waits for the first pod listing before it fails.
const ONCE_DISCOVERY_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error(
        "no Kubernetes configuration: neither KUBECONFIG / ~/.kube/config nor the in-cluster \
         service account works: {0}"
    )]
    KubeConfig(#[source] kube::config::InferConfigError),
    #[error("cannot build a Kubernetes client: {0}")]
    KubeClient(#[source] kube::Error),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Publish(#[from] crate::cloudwatch::PublishError),
}

/// Discovery, scraping and aggregation: everything a round needs before publishing.
pub struct RoundRunner {
    discovery: PodDiscovery,
    scraper: Scraper,
    aggregator: Aggregator,
    /// Pods whose last good gauge values stood in for them in the last round.
    stale_pods: usize,
}

impl RoundRunner {
    pub fn new(discovery: PodDiscovery, scraper: Scraper, aggregator: Aggregator) -> Self {
        RoundRunner {
            discovery,
            scraper,
            aggregator,
            stale_pods: 0,
        }
    }

    /// Runs one round over the pods in the watch cache and returns its datums,
    /// self-metrics last.
    pub async fn round(&mut self) -> Round {
        let targets = self.discovery.targets();
        if targets.is_empty() {
            tracing::warn!(
                "no Running aws-node pods found; check --aws-node-namespace and --aws-node-selector"
            );
        }
        self.round_over(targets).await.0
    }

    /// Runs one round over `targets`: each scrape is parsed and folded into the aggregate
    /// as it completes and its body dropped, so a round holds at most `--scrape-concurrency`
    /// bodies however many nodes there are. Returns the datums (self-metrics last) and
    /// what happened to the pods.
    pub async fn round_over(&mut self, targets: Vec<ScrapeTarget>) -> (Round, RoundStats) {
        let timestamp = SystemTime::now();
        let started = Instant::now();
        let pods = targets.len();
        let mut not_started = 0_usize;
        // How long each started scrape took, for the deadline check.
        let mut durations = Vec::with_capacity(pods);
        let mut round = self.aggregator.begin_round();
        let mut scrapes = std::pin::pin!(self.scraper.scrape_each(targets));
        while let Some((position, scrape)) = scrapes.next().await {
            if matches!(scrape.outcome, Err(ScrapeError::NotStarted(_))) {
                not_started += 1;
            }
            durations.extend(scrape.elapsed);
            let parsed = round.parse(pod_scrape(&scrape));
            round.fold(position, parsed);
        }
        let (round, stats) = round.finish_with_self_metrics(timestamp);
        self.stale_pods = stats.stale_pods;
        self.warn_if_the_deadline_is_short(pods, &mut durations);
        self.log_stale_pods(&stats);
        round.warn_unpublishable();
        for failure in &stats.parse_failures {
            tracing::warn!(pod = %failure.pod, "the scrape did not parse: {}", failure.error);
        }
        for pod in &stats.series_limit_pods {
            tracing::warn!(
                %pod,
                "the scrape has more counter series than --max-series-per-pod allows; the \
                 pod counts as a scrape error and keeps its previous state"
            );
        }
        if not_started > 0 {
            tracing::warn!(
                not_started,
                "the round's deadline passed before every pod was scraped; raise \
                 --scrape-concurrency or --round-timeout"
            );
        }
        let counts = RoundCounts::from_stats(&stats);
        tracing::info!(
            pods_scraped = counts.pods_scraped,
            scrape_errors = counts.scrape_errors,
            datums = round.datums.len(),
            elapsed = ?started.elapsed(),
            "round done"
        );
        (round, stats)
    }

    /// Warns when the round's deadline is shorter than what a round of `pods` scrapes needs
    /// at the configured concurrency and this round's median scrape time (`durations`, of
    /// the scrapes that started): with such a deadline the last waves of every round fail
    /// however healthy the nodes are.
    fn warn_if_the_deadline_is_short(&self, pods: usize, durations: &mut [Duration]) {
        let options = self.scraper.options();
        let Some(median) = median_duration(durations) else {
            return;
        };
        let needed = round_time_estimate(pods, options.concurrency, median);
        if options.round_timeout < needed {
            tracing::warn!(
                "the round's deadline (--round-timeout {:?}) is shorter than the {needed:?} \
                 that {pods} pods need at --scrape-concurrency {} with this round's median \
                 scrape time of {median:?} (ceil({pods} / {}) rounds of scrapes x the median); \
                 raise --scrape-concurrency or --round-timeout (at most --interval, so raise \
                 that too if needed)",
                options.round_timeout,
                options.concurrency,
                options.concurrency
            );
        }
    }

    /// One line when last good values stood in for pods, or were dropped as too old.
    fn log_stale_pods(&self, stats: &RoundStats) {
        if stats.stale_pods == 0 && stats.stale_expired == 0 {
            return;
        }
        tracing::warn!(
            stale_pods = stats.stale_pods,
            dropped = stats.stale_expired,
            "{} pods not scraped this round count with the gauge values of their last good \
             scrape; {} pods not scraped for more than --stale-rounds {} rounds in a row were \
             dropped from the totals",
            stats.stale_pods,
            stats.stale_expired,
            self.aggregator.options().stale_rounds
        );
    }

    /// Pods whose last good gauge values stood in for them in the last round.
    pub fn stale_pods(&self) -> usize {
        self.stale_pods
    }

    /// The pods the next round would scrape.
    pub fn targets(&self) -> Vec<ScrapeTarget> {
        self.discovery.targets()
    }

    /// Waits until the watch cache holds its first full listing.
    pub async fn wait_until_ready(&self, timeout: Duration) -> Result<(), DiscoveryError> {
        self.discovery.wait_until_ready(timeout).await
    }

    /// The aggregator and its per-pod state.
    pub fn aggregator(&self) -> &Aggregator {
        &self.aggregator
    }

    /// Drops all per-pod state, e.g. when this replica stops being the leader and its state
    /// would be stale by the time it leads again.
    pub fn forget(&mut self) {
        self.aggregator = Aggregator::new(self.aggregator.options().clone());
        self.stale_pods = 0;
    }
}

/// A scrape as the aggregator takes it: the pod, and its body or that it failed (why it
/// failed was logged by the scraper).
fn pod_scrape(scrape: &ScrapeResult) -> PodScrape<'_> {
    PodScrape {
        uid: &scrape.target.uid,
        name: &scrape.target.name,
        zone: scrape.target.zone.as_deref(),
        outcome: match &scrape.outcome {
            Ok(body) => ScrapeOutcome::Body(body),
            Err(_) => ScrapeOutcome::Failed,
        },
    }
}

/// Builds the kube clients, the discovery and the scraper for `settings`; also returns the
/// Kubernetes configuration, for the Lease client.
async fn round_runner(settings: &Settings) -> Result<(RoundRunner, kube::Config), CycleError> {
    let config = kube::Config::infer()
        .await
        .map_err(CycleError::KubeConfig)?;
    let client = kube::Client::try_from(config.clone()).map_err(CycleError::KubeClient)?;
    let scraper = match settings.scrape.via {
        ScrapeVia::Proxy => Scraper::via_proxy(config.clone(), &settings.scrape.scraper)
            .map_err(CycleError::KubeClient)?,
        ScrapeVia::Direct => Scraper::direct(&settings.scrape.scraper),
    };
    let discovery = PodDiscovery::start(
        client.clone(),
        &settings.scrape.namespace,
        &settings.scrape.selector,
        settings.per_az,
    );
    let aggregator = Aggregator::new(AggregatorOptions {
        cluster_id: settings.cluster_id.clone(),
        per_az: settings.per_az,
        max_series_per_pod: settings.scrape.max_series_per_pod,
        stale_rounds: settings.scrape.stale_rounds,
    });
    Ok((RoundRunner::new(discovery, scraper, aggregator), config))
}

async fn cloudwatch_publisher(settings: &Settings) -> Option<CloudWatchPublisher> {
    let cloudwatch = settings.cloudwatch.as_ref()?;
    let sdk_config = load_sdk_config(&cloudwatch.region, cloudwatch.attempt_timeout).await;
    Some(CloudWatchPublisher::new(
        &sdk_config,
        &cloudwatch.namespace,
        cloudwatch.queue_capacity,
        cloudwatch.batch_datums,
        cloudwatch.batch_bytes,
    ))
}

/// The datums of a round that go to CloudWatch: all of them, or, with `--self-metrics
/// false`, all but `podsScraped` and `scrapeErrors`, which would cost two custom metrics per
/// cluster.
pub fn for_cloudwatch(datums: &[Datum], self_metrics: bool) -> Vec<Datum> {
    datums
        .iter()
        .filter(|datum| {
            self_metrics
                || (datum.metric_name != PODS_SCRAPED_METRIC
                    && datum.metric_name != SCRAPE_ERRORS_METRIC)
        })
        .cloned()
        .collect()
}

/// One cycle. With `dry_run` nothing is published and the round is returned for printing:
/// the datums `once` would send.
pub async fn once(settings: &Settings, dry_run: bool) -> Result<Rounds, CycleError> {
    let (mut runner, _config) = round_runner(settings).await?;
    runner.wait_until_ready(ONCE_DISCOVERY_WAIT).await?;
    let mut round = runner.round().await;
    round.datums = for_cloudwatch(&round.datums, settings.self_metrics);
    if !dry_run && let Some(publisher) = cloudwatch_publisher(settings).await {
        publisher.enqueue(round.datums.clone());
        let report = publisher.flush().await?;
        tracing::info!(
            calls = report.calls,
            datums = report.datums_sent,
            rejected = report.datums_rejected,
            "published to CloudWatch"
        );
    }
    Ok(Rounds {
        rounds: vec![round],
    })
}

/// Rounds every interval until `shutdown` completes.
pub async fn run(
    settings: &Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CycleError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let serve_state = ServeState::new();
    let server = match settings.listen {
        Some(address) => Some(
            Server::start(
                address,
                Arc::clone(&serve_state),
                ServeOptions::for_this_process(settings.max_connections),
            )
            .await?,
        ),
        None => None,
    };
    let (runner, config) = round_runner(settings).await?;
    let mut election = Election::start(settings.leader.as_ref(), config)?;
    let publisher = cloudwatch_publisher(settings).await.map(Arc::new);
    let (stop_uploader, stop_receiver) = watch::channel(false);
    let uploader = publisher
        .as_ref()
        .map(|publisher| publisher.spawn_uploader(stop_receiver, election.leadership.clone()));
    let mut rounds = RoundLoop {
        runner,
        publisher,
        serve_state,
        self_metrics: settings.self_metrics,
        status: PublisherStatus::default(),
        was_leader: false,
        last_round: Vec::new(),
        unpublishable_total: 0,
    };

    // `shutdown` must not be polled again once it completed, so its completion here is
    // remembered and the round loop skipped.
    let stopped_early = tokio::select! {
        ready = rounds.runner.wait_until_ready(RUN_DISCOVERY_WAIT) => {
            if let Err(error) = ready {
                tracing::warn!("{error}; starting rounds anyway");
            }
            false
        }
        () = &mut shutdown => true,
    };
    if !stopped_early {
        rounds
            .run_until(settings.interval, &mut election.leadership, shutdown)
            .await;
    }

    rounds.serve_state.set_ready(false);
    if let (Some(publisher), Some(uploader)) = (rounds.publisher.as_ref(), uploader) {
        publisher
            .stop_uploader(&stop_uploader, uploader, settings.shutdown_timeout)
            .await;
    }
    election.stop().await;
    drop(server);
    tracing::info!("stopped");
    Ok(())
}

/// This replica's view of the leadership: "always leading" without election, else what
/// the election task reports, bounded by the renewal deadline.
struct Election {
    leadership: Leadership,
    /// Held so that `leadership` never reads as closed, which would wake the round loop
    /// without end; without election nothing else holds a sender.
    _state_sender: watch::Sender<LeadershipState>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Election {
    /// Starts the election task when `leader` asks for one, with its own Lease client.
    fn start(
        leader: Option<&LeaderSettings>,
        config: kube::Config,
    ) -> Result<Election, CycleError> {
        let initial = match leader {
            Some(_) => LeadershipState::following(false),
            None => LeadershipState::unelected(),
        };
        let (state_sender, state) = watch::channel(initial);
        let (stop, stop_receiver) = watch::channel(false);
        let task = match leader {
            Some(leader) => {
                let namespace = leader
                    .lease_namespace
                    .clone()
                    .unwrap_or_else(|| config.default_namespace.clone());
                let client =
                    lease_client(config, leader.lease_duration).map_err(CycleError::KubeClient)?;
                let api: kube::Api<Lease> = kube::Api::namespaced(client, &namespace);
                let elector = LeaderElector::new(
                    api,
                    &namespace,
                    &leader.lease_name,
                    &leader.identity,
                    leader.lease_duration,
                );
                Some(tokio::spawn(run_election(
                    elector,
                    state_sender.clone(),
                    stop_receiver,
                )))
            }
            None => None,
        };
        Ok(Election {
            leadership: Leadership::new(state),
            _state_sender: state_sender,
            stop,
            task,
        })
    }

    /// Stops the election task and waits for it to release the Lease.
    async fn stop(self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task
            && let Err(error) = task.await
        {
            tracing::warn!("the leader election task failed: {error}");
        }
    }
}

/// Whether the round loop goes on after a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterRound {
    Continue,
    ShutDown,
}

/// What `run` keeps from round to round.
struct RoundLoop {
    runner: RoundRunner,
    /// Shared with the upload task, which sends what the rounds queue.
    publisher: Option<Arc<CloudWatchPublisher>>,
    serve_state: Arc<ServeState>,
    /// `--self-metrics`: whether the self-metrics are queued for CloudWatch (they are
    /// served either way).
    self_metrics: bool,
    status: PublisherStatus,
    was_leader: bool,
    /// What `/metrics` serves: the datums of the last round this replica led.
    last_round: Vec<Datum>,
    /// Values the aggregator left out because CloudWatch would refuse them.
    unpublishable_total: u64,
}

impl RoundLoop {
    /// A round every `interval` while leading, standing by otherwise, until `shutdown`
    /// completes.
    async fn run_until<F: Future<Output = ()>>(
        &mut self,
        interval: Duration,
        leadership: &mut Leadership,
        mut shutdown: Pin<&mut F>,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'rounds: loop {
            tokio::select! {
                _ = ticker.tick() => {}
                reported = leadership.changed() => {
                    leadership.see();
                    let leads = reported && leadership.leads_now();
                    if leads && !self.was_leader {
                        // A new leader starts its first round at once rather than an interval
                        // later.
                        ticker.reset();
                    } else if leads {
                        // Still leading: the next round comes with the ticker.
                        continue 'rounds;
                    }
                    // Not leading: the check below stands by.
                }
                () = &mut shutdown => return,
            }
            if !leadership.leads_now() {
                self.standby(leadership.see());
                continue 'rounds;
            }
            self.was_leader = true;
            match self.lead_round(leadership, shutdown.as_mut()).await {
                AfterRound::Continue => {}
                AfterRound::ShutDown => return,
            }
        }
    }

    /// One round as the leader: scrape, aggregate, queue for the upload task (never waiting
    /// for CloudWatch), then serve the result. The round is abandoned the moment leadership
    /// ends (reported, or its renewal deadline passed), and a round that ends after that
    /// is not published: a former leader never acts.
    async fn lead_round<F: Future<Output = ()>>(
        &mut self,
        leadership: &Leadership,
        mut shutdown: Pin<&mut F>,
    ) -> AfterRound {
        let started = Instant::now();
        let mut lost = leadership.clone();
        let round = tokio::select! {
            round = self.runner.round() => round,
            () = lost.lost() => {
                tracing::warn!("lost leadership during the round: abandoned it, nothing published");
                return AfterRound::Continue;
            }
            () = &mut shutdown => {
                tracing::info!("shutting down: abandoned the round in flight");
                return AfterRound::ShutDown;
            }
        };
        if !leadership.leads_now() {
            tracing::warn!("lost leadership as the round ended; not publishing it");
            return AfterRound::Continue;
        }
        self.unpublishable_total += round.unpublishable.len() as u64;
        if let Some(publisher) = self.publisher.as_ref() {
            publisher.enqueue(for_cloudwatch(&round.datums, self.self_metrics));
        }
        self.serve_led_round(started, round);
        AfterRound::Continue
    }

    /// Records a round this replica led in the status and serves its datums.
    fn serve_led_round(&mut self, started: Instant, round: Round) {
        self.status.round_duration_seconds = started.elapsed().as_secs_f64();
        self.status.last_round_unix_seconds = round
            .datums
            .first()
            .map_or(0.0, |datum| unix_seconds(datum.timestamp));
        self.status.rounds_total += 1;
        self.status.stale_pods = self.runner.stale_pods();
        self.status.is_leader = true;
        self.status.cloudwatch_rejected_datums_total = self.unpublishable_total;
        if let Some(publisher) = self.publisher.as_ref() {
            self.status.cloudwatch_queued_datums = publisher.queued();
            self.status.cloudwatch_dropped_datums_total = publisher.dropped_total();
            self.status.cloudwatch_rejected_datums_total += publisher.rejected_total();
        }
        self.last_round = round.datums;
        self.serve_state.publish(&self.last_round, &self.status);
        self.serve_state.set_ready(true);
    }

    /// A replica that does not lead: forget per-pod state once (it would be stale by the
    /// time this replica leads again), stay ready while the election is healthy, and keep
    /// serving the last values marked as not leading.
    fn standby(&mut self, state: LeadershipState) {
        if self.was_leader {
            self.runner.forget();
            self.was_leader = false;
            self.status.is_leader = false;
            self.serve_state.publish(&self.last_round, &self.status);
        }
        self.serve_state.set_ready(state.healthy);
    }
}

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datum::Unit;

    fn datum(name: &str) -> Datum {
        Datum {
            metric_name: name.to_owned(),
            value: 1.0,
            unit: Unit::Count,
            dimensions: Vec::new(),
            timestamp: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn self_metrics_false_keeps_only_the_ipamd_datums_for_cloudwatch() {
        let round = [
            datum("assignIPAddresses"),
            datum("addReqCount"),
            datum(PODS_SCRAPED_METRIC),
            datum(SCRAPE_ERRORS_METRIC),
        ];
        let names = |datums: Vec<Datum>| -> Vec<String> {
            datums.into_iter().map(|datum| datum.metric_name).collect()
        };
        assert_eq!(
            names(for_cloudwatch(&round, true)),
            [
                "assignIPAddresses",
                "addReqCount",
                "podsScraped",
                "scrapeErrors"
            ]
        );
        assert_eq!(
            names(for_cloudwatch(&round, false)),
            ["assignIPAddresses", "addReqCount"]
        );
    }
}
