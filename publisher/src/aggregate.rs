//! Folds one round of per-pod ipamd scrapes into the cluster-level datums to publish, keeping
//! the per-pod counter state between rounds. These are the rules of "Metric semantics" in
//! `publisher/README.md`:
//!
//! - **Type per scrape.** Each pod's samples are handled by the type their family has in that
//!   pod's exposition (`# TYPE`), so a family that is a gauge on one aws-node version and a
//!   counter on another works, between rounds and between pods of one round (during a rolling
//!   upgrade the published value then adds the gauge pods' values to the counter pods'
//!   increases, which is each pod's own meaning). Untyped samples are ignored: without a type
//!   it is unknown whether the value is cumulative.
//! - **Gauge**: the sum over all series of all pods.
//! - **Counter**: per pod (keyed by pod UID) and per series (the full label set), the increase
//!   since the pod's previous successful scrape: `cur - prev`, or `cur` when `cur < prev` (the
//!   counter restarted), or 0 the first time the series is seen. The cluster value is the sum
//!   of the increases.
//! - **`awsAPILatency`**: the largest finite 0.99 quantile over all pods and series when any
//!   pod exposes one; otherwise the mean latency over the interval, the summed `_sum` increases
//!   divided by the summed `_count` increases (the same per-pod, per-series counter rules),
//!   published only when the `_count` increase is above 0. Unit `Milliseconds`; everything else
//!   is `Count`.
//! - **Union, no invented values.** A metric is published when any pod exposed its family in
//!   the round (or in the last good scrape that stands in for it), and not at all when none
//!   did.
//! - **Failures.** A pod that was not scraped this round (its scrape failed or timed out,
//!   was never started before the round's deadline, its body does not parse, or it has more
//!   series than the limit) uses none of this round's body (a body is parsed completely
//!   before any of it is used) and is counted in [`RoundStats`].
//!   - Its **gauges** stand in from its last successful scrape: the sums of that scrape's
//!     gauge samples, in the zone it had then, for at most
//!     [`AggregatorOptions::stale_rounds`] rounds in a row (counted in
//!     [`RoundStats::stale_pods`]); after that they are dropped
//!     ([`RoundStats::stale_expired`]) and the pod adds nothing until it answers again. Gauges
//!     are state (addresses held, ENIs allowed): one late answer does not change how many
//!     addresses a node has, while dropping them made capacity totals dip and fire false
//!     IP-exhaustion alarms. A pod never scraped successfully adds nothing: no value is
//!     invented.
//!   - Its **counters** add nothing that round and their state is **kept**: when it comes
//!     back, its increase covers every interval since its last good scrape, so nothing is
//!     lost and nothing is counted twice. Dropping the state instead would turn the recovery
//!     into a first sight and lose the increase of the missed intervals. (If it restarted
//!     meanwhile, the reset rule applies.)
//!   - Its **latency quantile** is not carried over: it describes the calls of the last
//!     moments, not a state, and an old peak would stand for calls nobody made.
//! - **Bounded memory.** The state of a pod that is not in the round's pod list at all (deleted,
//!   or replaced by a pod with a new UID) is dropped, its last good gauges with it. A series
//!   that a pod no longer exposes is forgotten with that pod's next successful scrape. A pod's
//!   last good gauges are one value per ipamd metric it exposed, at most 20.
//! - **Never NaN or infinity.** Non-finite samples, and negative counter samples (a counter
//!   cannot go below 0), are ignored as if absent; a counter series that reports such a value
//!   keeps its previous value as state. A total that still overflows to infinity is not
//!   published.
//!
//! Samples are kept compactly: a counter series is a metric index, a part (value, `_sum` or
//! `_count`) and an interned label set, 8 bytes plus its 8-byte value. Label sets are interned
//! once for all pods (their vocabulary is small: API and function names), and the interner is
//! compacted when it outgrows the live state.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use crate::datum::{
    CLUSTER_DIMENSION, Datum, Dimension, Round, Unit, UnpublishableValue, cloudwatch_accepts,
};
use crate::exposition::{MetricType, ParseError, Samples, Suffix};
use crate::ipamd_metrics::{Aggregation, IPAMD_METRIC_COUNT, IPAMD_METRICS, index_of_family};

/// The dimension name of the per-availability-zone datums.
pub const AVAILABILITY_ZONE_DIMENSION: &str = "AvailabilityZone";

/// The self-metric counting pods whose scrape was read and parsed this round.
pub const PODS_SCRAPED_METRIC: &str = "podsScraped";
/// The self-metric counting pods that failed to scrape or parse this round.
pub const SCRAPE_ERRORS_METRIC: &str = "scrapeErrors";

/// How the aggregator labels its datums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregatorOptions {
    /// The value of the `CLUSTER_ID` dimension on every datum.
    pub cluster_id: String,
    /// Also publish the capacity metrics once per availability zone.
    pub per_az: bool,
    /// The most counter series kept for one pod between rounds: a pod whose body has more
    /// counter samples of the ipamd families fails that round (counted in
    /// [`RoundStats::series_limit_errors`]) and keeps its previous state, so a node with a
    /// label-cardinality bug cannot grow the publisher's memory without bound.
    pub max_series_per_pod: usize,
    /// How many rounds in a row a pod that was not scraped still contributes the gauge values
    /// of its last successful scrape (see "Failures" in the module docs); 0: never, and no
    /// gauge values are kept.
    pub stale_rounds: u32,
}

/// The default of [`AggregatorOptions::stale_rounds`]: three rounds (90 s at the default
/// interval) cover a slow round, a node busy for a minute or an API server hiccup, while a
/// node that is really gone (or broken) leaves the totals within two minutes.
pub const DEFAULT_STALE_ROUNDS: u32 = 3;

/// The default of [`AggregatorOptions::max_series_per_pod`]: fifteen times the ~1,300
/// samples a real ipamd exposes (far fewer of them are counters), and small enough that
/// 5,000 pods at the cap would still be refused long before memory runs out, since a 1 MiB
/// body holds at most ~27,000 such series anyway.
pub const DEFAULT_MAX_SERIES_PER_POD: usize = 20_000;

/// One pod's part of a round: who it is and what its scrape returned.
#[derive(Debug, Clone, Copy)]
pub struct PodScrape<'a> {
    /// The pod's UID: its identity for counter state. A replaced pod has a new UID and starts
    /// fresh. UIDs are expected to be unique within a round; a repeated UID is ignored.
    pub uid: &'a str,
    /// The pod's name, used in [`ParseFailure`].
    pub name: &'a str,
    /// The availability zone of the pod's node, for the per-AZ datums.
    pub zone: Option<&'a str>,
    pub outcome: ScrapeOutcome<'a>,
}

/// What a pod's scrape returned.
#[derive(Debug, Clone, Copy)]
pub enum ScrapeOutcome<'a> {
    /// The response body: an exposition in the text format.
    Body(&'a str),
    /// The scrape failed (connection error, timeout, error status, body too large).
    Failed,
}

/// What happened to the pods of one round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundStats {
    /// Pods whose body was parsed and used.
    pub pods_scraped: usize,
    /// Pods whose scrape failed ([`ScrapeOutcome::Failed`]).
    pub scrape_errors: usize,
    /// Pods whose body did not parse; [`RoundStats::parse_failures`] says why.
    pub parse_errors: usize,
    /// Which pod did not parse, and why, for the log.
    pub parse_failures: Vec<ParseFailure>,
    /// Pods whose body had more counter series than
    /// [`AggregatorOptions::max_series_per_pod`].
    pub series_limit_errors: usize,
    /// Which pods those were, for the log.
    pub series_limit_pods: Vec<String>,
    /// Pods not scraped this round whose last good gauge values were used instead. They are
    /// counted in the errors above too.
    pub stale_pods: usize,
    /// Pods not scraped this round whose last good gauge values were dropped this round,
    /// because they have now failed more than [`AggregatorOptions::stale_rounds`] rounds in a
    /// row.
    pub stale_expired: usize,
}

/// A pod whose body did not parse.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseFailure {
    pub pod: String,
    pub error: ParseError,
}

/// The counts the self-metrics publish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundCounts {
    /// Pods whose body was read and parsed.
    pub pods_scraped: usize,
    /// Pods that failed to scrape or to parse.
    pub scrape_errors: usize,
}

impl RoundCounts {
    pub fn from_stats(stats: &RoundStats) -> Self {
        RoundCounts {
            pods_scraped: stats.pods_scraped,
            scrape_errors: stats.scrape_errors + stats.parse_errors + stats.series_limit_errors,
        }
    }
}

/// The self-metrics of a round, with the CLUSTER_ID dimension.
pub fn self_metrics(cluster_id: &str, timestamp: SystemTime, counts: RoundCounts) -> Vec<Datum> {
    [
        (PODS_SCRAPED_METRIC, counts.pods_scraped),
        (SCRAPE_ERRORS_METRIC, counts.scrape_errors),
    ]
    .into_iter()
    .map(|(name, count)| Datum {
        metric_name: name.to_owned(),
        value: count as f64,
        unit: Unit::Count,
        dimensions: vec![Dimension {
            name: CLUSTER_DIMENSION.to_owned(),
            value: cluster_id.to_owned(),
        }],
        timestamp,
    })
    .collect()
}

/// Which counter of a family a series is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Part {
    /// The family's own samples (a counter family).
    Value,
    /// The `_sum` samples of the latency summary.
    Sum,
    /// The `_count` samples of the latency summary.
    Count,
}

/// A counter series of one pod: 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SeriesKey {
    metric: u8,
    part: Part,
    labels: LabelSetId,
}

type LabelSetId = u32;

/// What the aggregator remembers about one pod.
#[derive(Debug, Default)]
struct PodState {
    /// The number of the last round the pod was in; pods not in the current round are dropped.
    last_round: u64,
    /// The last good value of each counter series.
    counters: CounterValues,
    /// The gauges of the pod's last successful scrape, while they may still stand in for it.
    last_good: Option<LastGoodGauges>,
    /// The rounds in a row the pod was not scraped, since its last successful scrape.
    failed_rounds: u32,
}

/// The last good value of each counter series of one pod, sorted by series: exactly 16
/// bytes a series. A hash map per pod would take twice that and more (empty buckets and
/// control bytes), which at 100,000 nodes of ~60 counter series each was the largest part
/// of the publisher's memory.
#[derive(Debug, Default)]
struct CounterValues(Box<[(SeriesKey, f64)]>);

impl CounterValues {
    fn from_unsorted(mut values: Vec<(SeriesKey, f64)>) -> Self {
        values.sort_unstable_by_key(|(key, _)| *key);
        CounterValues(values.into_boxed_slice())
    }

    fn get(&self, key: &SeriesKey) -> Option<&f64> {
        let index = self.0.binary_search_by_key(key, |(key, _)| *key).ok()?;
        self.0.get(index).map(|(_, value)| value)
    }

    fn keys(&self) -> impl Iterator<Item = &SeriesKey> {
        self.0.iter().map(|(key, _)| key)
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The gauge totals of a pod's last successful scrape and the zone it had then, kept only
/// for the metrics it exposed (a handful of the 20): 16 bytes each.
#[derive(Debug)]
struct LastGoodGauges {
    gauges: Box<[(u8, f64)]>,
    zone: Option<Box<str>>,
}

impl LastGoodGauges {
    fn new(gauges: &Totals, zone: Option<&str>) -> Self {
        let gauges = (0..IPAMD_METRIC_COUNT)
            .filter_map(|index| Some((u8::try_from(index).ok()?, gauges.get(index)?)))
            .collect();
        LastGoodGauges {
            gauges,
            zone: zone.map(Box::from),
        }
    }

    /// Its contribution to a round in which the pod stands at `position`: the gauges alone,
    /// no counter increase and no latency.
    fn contribution(&self, position: usize) -> PodContribution {
        let mut totals = Totals::new();
        for (metric, value) in self.gauges.iter() {
            totals.add(usize::from(*metric), *value);
        }
        PodContribution {
            position,
            zone: self.zone.clone(),
            totals,
            latency: LatencyTotals::default(),
        }
    }

    fn heap_bytes(&self) -> usize {
        self.gauges.len() * size_of::<(u8, f64)>() + self.zone.as_ref().map_or(0, |zone| zone.len())
    }
}

/// What stands in for a pod that was not scraped this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StandIn {
    /// Its last good gauge values.
    Stale,
    /// Nothing any more: its last good values were just dropped, as too old.
    Expired,
    /// Nothing: it never had a successful scrape (or its values expired earlier, or stale
    /// values are off).
    Nothing,
}

/// Label sets (the raw label text of a series) shared by all pods, each stored once.
#[derive(Debug)]
struct LabelInterner {
    ids: HashMap<Box<str>, LabelSetId>,
    /// Compact when there are more label sets than this.
    compact_above: usize,
}

/// The interner is never compacted below this many label sets: compaction walks every pod's
/// state, which is not worth doing for a small interner.
const MIN_INTERNER_COMPACTION: usize = 4096;

impl LabelInterner {
    fn new() -> Self {
        Self {
            ids: HashMap::new(),
            compact_above: MIN_INTERNER_COMPACTION,
        }
    }

    /// The id of `labels`, adding it when new. `None` only if 2^32 label sets are live at
    /// once, which the per-round compaction makes impossible in practice; the series is then
    /// not tracked.
    fn intern(&mut self, labels: &str) -> Option<LabelSetId> {
        if let Some(id) = self.ids.get(labels) {
            return Some(*id);
        }
        let id = LabelSetId::try_from(self.ids.len()).ok()?;
        self.ids.insert(labels.into(), id);
        Some(id)
    }

    /// Drops the label sets no pod refers to any more, once the interner has doubled since the
    /// last compaction, and renumbers the rest.
    fn compact_if_needed(&mut self, pods: &mut HashMap<Box<str>, PodState>) {
        if self.ids.len() <= self.compact_above {
            return;
        }
        let mut live = vec![false; self.ids.len()];
        for state in pods.values() {
            for key in state.counters.keys() {
                if let Some(flag) = live.get_mut(key.labels as usize) {
                    *flag = true;
                }
            }
        }
        let mut renumbered: Vec<Option<LabelSetId>> = vec![None; self.ids.len()];
        let mut next_id: LabelSetId = 0;
        self.ids.retain(|_, id| {
            let index = *id as usize;
            if !live.get(index).copied().unwrap_or(false) {
                return false;
            }
            if let Some(slot) = renumbered.get_mut(index) {
                *slot = Some(next_id);
            }
            *id = next_id;
            next_id += 1;
            true
        });
        for state in pods.values_mut() {
            let renumbered_values = std::mem::take(&mut state.counters)
                .0
                .into_iter()
                .filter_map(|(key, value)| {
                    let labels = renumbered.get(key.labels as usize).copied().flatten()?;
                    Some((SeriesKey { labels, ..key }, value))
                })
                .collect();
            // New ids keep the old ids' order, but sorting again costs little here and
            // does not depend on it.
            state.counters = CounterValues::from_unsorted(renumbered_values);
        }
        self.ids.shrink_to_fit();
        self.compact_above = MIN_INTERNER_COMPACTION.max(2 * self.ids.len());
    }
}

/// The pod map is only shrunk when its capacity is this many entries or more, so that small
/// clusters never reallocate it.
const MIN_SHRINK_CAPACITY: usize = 64;

/// One sample of a pod, classified for aggregation; borrowed from the pod's body.
#[derive(Debug, Clone, Copy)]
enum Observation<'a> {
    /// A gauge sample of metric `metric`.
    Gauge { metric: usize, value: f64 },
    /// A counter sample (including the latency summary's `_sum` and `_count`).
    Counter {
        metric: usize,
        part: Part,
        labels: &'a str,
        value: f64,
    },
    /// A 0.99 quantile of the latency summary.
    LatencyQuantile { value: f64 },
}

/// The label value of the quantile the latency metric uses.
const LATENCY_QUANTILE: f64 = 0.99;

/// Why a body gave no observations.
#[derive(Debug)]
enum SamplesError {
    Parse(ParseError),
    /// More counter samples than the per-pod limit; parsing stopped there.
    TooManySeries,
}

impl From<ParseError> for SamplesError {
    fn from(error: ParseError) -> Self {
        SamplesError::Parse(error)
    }
}

/// Parses `body`, keeping only the samples of the ipamd families, classified. The parser
/// streams, but nothing is aggregated until the whole body has parsed. `capacity` is a guess
/// at the number of observations, so that the vector is allocated once. Parsing stops as
/// soon as there are more than `max_counters` counter samples, so that a pod with too many
/// series costs no more memory than one at the limit.
fn parse_ipamd_samples(
    body: &str,
    capacity: usize,
    max_counters: usize,
) -> Result<Vec<Observation<'_>>, SamplesError> {
    let mut observations = Vec::with_capacity(capacity);
    let mut counters = 0_usize;
    for sample in Samples::filtered(body, |family| index_of_family(family).is_some()) {
        let sample = sample?;
        let Some(metric) = index_of_family(sample.family) else {
            continue;
        };
        let Some(definition) = IPAMD_METRICS.get(metric) else {
            continue;
        };
        let observation = match (definition.aggregation, sample.family_type, sample.suffix) {
            (Aggregation::Value, MetricType::Gauge, Suffix::None) => Observation::Gauge {
                metric,
                value: sample.value,
            },
            (Aggregation::Value, MetricType::Counter, Suffix::None) => Observation::Counter {
                metric,
                part: Part::Value,
                labels: sample.raw_labels,
                value: sample.value,
            },
            (Aggregation::Latency, MetricType::Summary, Suffix::None) => {
                let is_wanted_quantile = sample
                    .label("quantile")
                    .and_then(|quantile| quantile.parse::<f64>().ok())
                    .is_some_and(|quantile| quantile == LATENCY_QUANTILE);
                if !is_wanted_quantile {
                    continue;
                }
                Observation::LatencyQuantile {
                    value: sample.value,
                }
            }
            (
                Aggregation::Latency,
                MetricType::Summary | MetricType::Histogram,
                suffix @ (Suffix::Sum | Suffix::Count),
            ) => Observation::Counter {
                metric,
                part: if suffix == Suffix::Sum {
                    Part::Sum
                } else {
                    Part::Count
                },
                labels: sample.raw_labels,
                value: sample.value,
            },
            // Untyped samples, histogram buckets and types that make no sense for the family.
            _ => continue,
        };
        if let Observation::Counter { .. } = observation {
            // Every counter sample is a series kept until the pod's next scrape (a repeated
            // one, which counts once, is counted twice here: the limit errs on the safe side).
            counters += 1;
            if counters > max_counters {
                return Err(SamplesError::TooManySeries);
            }
        }
        observations.push(observation);
    }
    Ok(observations)
}

/// The per-metric totals of one round (for the cluster, or for one zone).
#[derive(Debug, Clone, Copy)]
struct Totals {
    /// `Some` once any pod exposed the metric; the sum of gauge values and counter increases.
    values: [Option<f64>; IPAMD_METRIC_COUNT],
}

impl Totals {
    fn new() -> Self {
        Self {
            values: [None; IPAMD_METRIC_COUNT],
        }
    }

    fn add(&mut self, metric: usize, amount: f64) {
        if let Some(total) = self.values.get_mut(metric) {
            *total = Some(total.unwrap_or(0.0) + amount);
        }
    }

    fn get(&self, metric: usize) -> Option<f64> {
        self.values.get(metric).copied().flatten()
    }
}

/// The latency summary's totals of one round.
#[derive(Debug, Clone, Copy, Default)]
struct LatencyTotals {
    max_quantile: Option<f64>,
    sum_increase: f64,
    count_increase: f64,
}

impl LatencyTotals {
    /// Keeps the largest 0.99 quantile seen.
    fn add_quantile(&mut self, value: f64) {
        self.max_quantile = Some(self.max_quantile.map_or(value, |max| max.max(value)));
    }

    /// Adds another pod's latency totals to these.
    fn merge(&mut self, other: &LatencyTotals) {
        if let Some(value) = other.max_quantile {
            self.add_quantile(value);
        }
        self.sum_increase += other.sum_increase;
        self.count_increase += other.count_increase;
    }

    /// The published latency, per the module docs.
    fn value(&self) -> Option<f64> {
        self.max_quantile.or_else(|| {
            (self.count_increase > 0.0).then(|| self.sum_increase / self.count_increase)
        })
    }
}

/// What one pod added to a round. Contributions are kept until the round is finished and
/// summed in target order, so the datums do not depend on the order in which scrapes
/// complete (floating-point addition is not associative).
#[derive(Debug)]
struct PodContribution {
    /// The pod's place in the round's target list.
    position: usize,
    /// The pod's zone, when per-AZ datums are wanted and the zone is known.
    zone: Option<Box<str>>,
    /// Gauge values and counter increases of the `Value` metrics.
    totals: Totals,
    latency: LatencyTotals,
}

/// Everything one round adds up.
struct RoundTotals<'a> {
    cluster: Totals,
    latency: LatencyTotals,
    /// Per zone, only with `per_az` and only for the capacity metrics.
    zones: BTreeMap<&'a str, Totals>,
}

/// Keeps per-pod counter state between rounds and turns each round of scrapes into datums.
#[derive(Debug)]
pub struct Aggregator {
    options: AggregatorOptions,
    pods: HashMap<Box<str>, PodState>,
    labels: LabelInterner,
    /// The number of rounds run so far.
    round_number: u64,
    /// Scratch space for one pod's counter values while its scrape is committed.
    scratch_counters: HashMap<SeriesKey, f64>,
}

impl Aggregator {
    pub fn new(options: AggregatorOptions) -> Self {
        Self {
            options,
            pods: HashMap::new(),
            scratch_counters: HashMap::new(),
            labels: LabelInterner::new(),
            round_number: 0,
        }
    }

    /// The options the aggregator was created with.
    pub fn options(&self) -> &AggregatorOptions {
        &self.options
    }

    /// Runs one round over `pods` (every pod of the round, including the failed ones, whose
    /// state is kept) and returns the datums to publish, stamped `timestamp`, in table order
    /// with each capacity metric's per-zone datums (by zone name) right after its cluster datum.
    pub fn round(&mut self, pods: &[PodScrape<'_>], timestamp: SystemTime) -> (Round, RoundStats) {
        let mut round = self.begin_round();
        for (position, pod) in pods.iter().enumerate() {
            round.add(position, *pod);
        }
        round.finish(timestamp)
    }

    /// Starts a round whose pods are added one at a time with [`RoundInProgress::add`], as
    /// their scrapes complete, so that no body has to be kept once it is folded in. A round
    /// must be finished for its pods' state to be pruned; dropping it unfinished leaves the
    /// counter state of the pods added so far advanced (their increases are not published),
    /// which is what a publisher that stops or loses leadership mid-round wants anyway, as it
    /// then exits or forgets all state.
    pub fn begin_round(&mut self) -> RoundInProgress<'_> {
        self.round_number += 1;
        RoundInProgress {
            aggregator: self,
            stats: RoundStats::default(),
            contributions: Vec::new(),
            observation_capacity: 0,
        }
    }

    /// The number of pods whose state is kept (the pods of the last round).
    pub fn tracked_pods(&self) -> usize {
        self.pods.len()
    }

    /// The number of counter series kept over all pods.
    pub fn tracked_series(&self) -> usize {
        self.pods.values().map(|state| state.counters.len()).sum()
    }

    /// A rough estimate of the heap memory the state takes, in bytes, from the allocated
    /// capacities (for diagnostics and the memory test; allocator overhead not included).
    pub fn approximate_state_bytes(&self) -> usize {
        // A hashbrown table holds one control byte per bucket besides the entry itself.
        let pod_entry = size_of::<(Box<str>, PodState)>() + 1;
        let series_entry = size_of::<(SeriesKey, f64)>();
        let label_entry = size_of::<(Box<str>, LabelSetId)>() + 1;
        let pods: usize = self
            .pods
            .iter()
            .map(|(uid, state)| {
                uid.len()
                    + state.counters.len() * series_entry
                    + state
                        .last_good
                        .as_ref()
                        .map_or(0, LastGoodGauges::heap_bytes)
            })
            .sum();
        let labels: usize = self.labels.ids.keys().map(|labels| labels.len()).sum();
        self.pods.capacity() * pod_entry + pods + self.labels.ids.capacity() * label_entry + labels
    }

    /// Records that the pod `uid` is in the current round; false when it already was (a
    /// repeated UID, which is ignored).
    fn mark_in_round(&mut self, uid: &str) -> bool {
        let round_number = self.round_number;
        match self.pods.get_mut(uid) {
            Some(state) if state.last_round == round_number => false,
            Some(state) => {
                state.last_round = round_number;
                true
            }
            None => {
                self.pods.insert(
                    uid.into(),
                    PodState {
                        last_round: round_number,
                        ..PodState::default()
                    },
                );
                true
            }
        }
    }

    /// What stands in for the pod `uid`, which is in the round but was not scraped: its last
    /// good gauge values while it has failed at most `stale_rounds` rounds in a row, added to
    /// `contributions`.
    fn stand_in(
        &mut self,
        uid: &str,
        position: usize,
        contributions: &mut Vec<PodContribution>,
    ) -> StandIn {
        let stale_rounds = self.options.stale_rounds;
        let Some(state) = self.pods.get_mut(uid) else {
            return StandIn::Nothing;
        };
        state.failed_rounds = state.failed_rounds.saturating_add(1);
        let Some(last_good) = state.last_good.as_ref() else {
            return StandIn::Nothing;
        };
        if state.failed_rounds > stale_rounds {
            state.last_good = None;
            return StandIn::Expired;
        }
        contributions.push(last_good.contribution(position));
        StandIn::Stale
    }

    /// Turns a successfully parsed pod's observations into its contribution to the round and
    /// replaces its counter state and its last good gauges with this scrape's values.
    fn commit(
        &mut self,
        uid: &str,
        position: usize,
        zone: Option<&str>,
        observations: &[Observation<'_>],
    ) -> Option<PodContribution> {
        let state = self.pods.get_mut(uid)?;
        let mut contribution = PodContribution {
            position,
            zone: zone.map(Box::from),
            totals: Totals::new(),
            latency: LatencyTotals::default(),
        };
        // The gauges alone, to stand in for the pod when a later scrape fails.
        let mut gauges = Totals::new();
        // This scrape's counter values, in a map reused from pod to pod (cleared, its
        // capacity kept), then stored sorted and exactly sized.
        let current = &mut self.scratch_counters;
        current.clear();
        // Series whose sample this round was unusable: they keep their previous value.
        let mut carried_over = Vec::new();
        for observation in observations {
            match *observation {
                Observation::Gauge { metric, value } => {
                    if value.is_finite() {
                        contribution.totals.add(metric, value);
                        gauges.add(metric, value);
                    }
                }
                Observation::LatencyQuantile { value } => {
                    if value.is_finite() {
                        contribution.latency.add_quantile(value);
                    }
                }
                Observation::Counter {
                    metric,
                    part,
                    labels,
                    value,
                } => {
                    let Ok(metric_index) = u8::try_from(metric) else {
                        continue;
                    };
                    let Some(labels) = self.labels.intern(labels) else {
                        continue;
                    };
                    let key = SeriesKey {
                        metric: metric_index,
                        part,
                        labels,
                    };
                    if !(value.is_finite() && value >= 0.0) {
                        carried_over.push(key);
                        continue;
                    }
                    // A series repeated within one scrape counts once, the first time.
                    match current.entry(key) {
                        Entry::Occupied(_) => continue,
                        Entry::Vacant(slot) => {
                            slot.insert(value);
                        }
                    }
                    let increase = match state.counters.get(&key) {
                        None => 0.0,
                        Some(previous) if value < *previous => value,
                        Some(previous) => value - previous,
                    };
                    match part {
                        Part::Value => contribution.totals.add(metric, increase),
                        Part::Sum => contribution.latency.sum_increase += increase,
                        Part::Count => contribution.latency.count_increase += increase,
                    }
                }
            }
        }
        for key in carried_over {
            if let Some(previous) = state.counters.get(&key) {
                current.entry(key).or_insert(*previous);
            }
        }
        state.counters = CounterValues::from_unsorted(
            current.iter().map(|(key, value)| (*key, *value)).collect(),
        );
        state.failed_rounds = 0;
        state.last_good = (self.options.stale_rounds > 0)
            .then(|| LastGoodGauges::new(&gauges, contribution.zone.as_deref()));
        Some(contribution)
    }

    /// Ends a round: sums the contributions in target order, drops the state of pods that
    /// were not in the round, and returns the datums.
    fn finish_round(
        &mut self,
        mut contributions: Vec<PodContribution>,
        timestamp: SystemTime,
    ) -> Round {
        contributions.sort_by_key(|contribution| contribution.position);
        let mut totals = RoundTotals {
            cluster: Totals::new(),
            latency: LatencyTotals::default(),
            zones: BTreeMap::new(),
        };
        for contribution in &contributions {
            for index in 0..IPAMD_METRIC_COUNT {
                if let Some(value) = contribution.totals.get(index) {
                    totals.cluster.add(index, value);
                }
            }
            totals.latency.merge(&contribution.latency);
            if let Some(zone) = contribution.zone.as_deref() {
                let zone_entry = totals.zones.entry(zone).or_insert_with(Totals::new);
                for (index, definition) in IPAMD_METRICS.iter().enumerate() {
                    if let (true, Some(value)) =
                        (definition.capacity, contribution.totals.get(index))
                    {
                        zone_entry.add(index, value);
                    }
                }
            }
        }
        let round_number = self.round_number;
        self.pods
            .retain(|_, state| state.last_round == round_number);
        // Give memory back after a cluster shrinks a lot (a hash map never shrinks by itself).
        if self.pods.capacity() > 4 * self.pods.len().max(MIN_SHRINK_CAPACITY) {
            self.pods.shrink_to_fit();
        }
        self.labels.compact_if_needed(&mut self.pods);
        self.datums(&totals, timestamp)
    }

    /// The datums of a round, in table order. A value CloudWatch would refuse (a sum that
    /// overflowed to infinity, or a magnitude out of its range) is not a datum: it goes to
    /// [`Round::unpublishable`], so that the caller warns and counts instead of the metric
    /// vanishing silently.
    fn datums(&self, totals: &RoundTotals<'_>, timestamp: SystemTime) -> Round {
        let cluster_dimension = Dimension {
            name: CLUSTER_DIMENSION.to_owned(),
            value: self.options.cluster_id.clone(),
        };
        let mut round = Round::default();
        let mut push = |metric_name: &str, value: f64, unit: Unit, dimensions: Vec<Dimension>| {
            if cloudwatch_accepts(value) {
                round.datums.push(Datum {
                    metric_name: metric_name.to_owned(),
                    value,
                    unit,
                    dimensions,
                    timestamp,
                });
            } else {
                round.unpublishable.push(UnpublishableValue {
                    metric_name: metric_name.to_owned(),
                    dimensions,
                    value,
                });
            }
        };
        for (index, definition) in IPAMD_METRICS.iter().enumerate() {
            match definition.aggregation {
                Aggregation::Latency => {
                    if let Some(value) = totals.latency.value() {
                        push(
                            definition.metric_name,
                            value,
                            Unit::Milliseconds,
                            vec![cluster_dimension.clone()],
                        );
                    }
                }
                Aggregation::Value => {
                    let Some(value) = totals.cluster.get(index) else {
                        continue;
                    };
                    push(
                        definition.metric_name,
                        value,
                        Unit::Count,
                        vec![cluster_dimension.clone()],
                    );
                    if !(definition.capacity && self.options.per_az) {
                        continue;
                    }
                    for (zone, zone_totals) in &totals.zones {
                        if let Some(value) = zone_totals.get(index) {
                            push(
                                definition.metric_name,
                                value,
                                Unit::Count,
                                vec![
                                    cluster_dimension.clone(),
                                    Dimension {
                                        name: AVAILABILITY_ZONE_DIMENSION.to_owned(),
                                        value: (*zone).to_owned(),
                                    },
                                ],
                            );
                        }
                    }
                }
            }
        }
        round
    }
}

/// One pod's scrape after parsing: the classified samples of its ipamd families, borrowed
/// from its body, or why there are none. Made by [`RoundInProgress::parse`] and folded into
/// the round by [`RoundInProgress::fold`].
#[derive(Debug)]
pub struct ParsedScrape<'a> {
    uid: &'a str,
    name: &'a str,
    zone: Option<&'a str>,
    samples: ParsedSamples<'a>,
}

/// What parsing a pod's scrape gave.
#[derive(Debug)]
enum ParsedSamples<'a> {
    Parsed(Vec<Observation<'a>>),
    ScrapeFailed,
    ParseFailed(ParseError),
    TooManySeries,
}

/// A round being assembled pod by pod; see [`Aggregator::begin_round`].
#[derive(Debug)]
pub struct RoundInProgress<'a> {
    aggregator: &'a mut Aggregator,
    stats: RoundStats,
    contributions: Vec<PodContribution>,
    /// The most observations a pod of this round had so far: the next pod's guess.
    observation_capacity: usize,
}

impl RoundInProgress<'_> {
    /// Parses one pod's scrape into the samples the aggregate uses. The whole body is parsed
    /// before any of it is used, so a body that does not parse contributes nothing.
    pub fn parse<'a>(&self, pod: PodScrape<'a>) -> ParsedScrape<'a> {
        let samples = match pod.outcome {
            ScrapeOutcome::Failed => ParsedSamples::ScrapeFailed,
            ScrapeOutcome::Body(body) => {
                match parse_ipamd_samples(
                    body,
                    self.observation_capacity,
                    self.aggregator.options.max_series_per_pod,
                ) {
                    Ok(observations) => ParsedSamples::Parsed(observations),
                    Err(SamplesError::Parse(error)) => ParsedSamples::ParseFailed(error),
                    Err(SamplesError::TooManySeries) => ParsedSamples::TooManySeries,
                }
            }
        };
        ParsedScrape {
            uid: pod.uid,
            name: pod.name,
            zone: pod.zone,
            samples,
        }
    }

    /// Folds one parsed pod into the round. `position` is the pod's place in the round's
    /// target list; contributions are summed in that order. A pod whose UID is already in
    /// the round is ignored.
    pub fn fold(&mut self, position: usize, pod: ParsedScrape<'_>) {
        let aggregator = &mut *self.aggregator;
        if !aggregator.mark_in_round(pod.uid) {
            return;
        }
        let observations = match pod.samples {
            ParsedSamples::Parsed(observations) => observations,
            ParsedSamples::ScrapeFailed => {
                self.stats.scrape_errors += 1;
                self.stand_in(position, pod.uid);
                return;
            }
            ParsedSamples::ParseFailed(error) => {
                self.stats.parse_errors += 1;
                self.stats.parse_failures.push(ParseFailure {
                    pod: pod.name.to_owned(),
                    error,
                });
                self.stand_in(position, pod.uid);
                return;
            }
            ParsedSamples::TooManySeries => {
                self.stats.series_limit_errors += 1;
                self.stats.series_limit_pods.push(pod.name.to_owned());
                self.stand_in(position, pod.uid);
                return;
            }
        };
        self.observation_capacity = self.observation_capacity.max(observations.len());
        self.stats.pods_scraped += 1;
        let zone = pod.zone.filter(|_| aggregator.options.per_az);
        if let Some(contribution) = aggregator.commit(pod.uid, position, zone, &observations) {
            self.contributions.push(contribution);
        }
    }

    /// Adds what stands in for a pod that was not scraped this round, and counts it.
    fn stand_in(&mut self, position: usize, uid: &str) {
        match self
            .aggregator
            .stand_in(uid, position, &mut self.contributions)
        {
            StandIn::Stale => self.stats.stale_pods += 1,
            StandIn::Expired => self.stats.stale_expired += 1,
            StandIn::Nothing => {}
        }
    }

    /// Parses one pod's scrape and folds it into the round ([`RoundInProgress::parse`], then
    /// [`RoundInProgress::fold`]). The body is not referred to after this call.
    pub fn add(&mut self, position: usize, pod: PodScrape<'_>) {
        let parsed = self.parse(pod);
        self.fold(position, parsed);
    }

    /// Ends the round: the datums to publish, stamped `timestamp`, and what happened to the
    /// pods.
    pub fn finish(self, timestamp: SystemTime) -> (Round, RoundStats) {
        let round = self.aggregator.finish_round(self.contributions, timestamp);
        (round, self.stats)
    }

    /// Ends the round like [`RoundInProgress::finish`] and adds the self-metrics
    /// `podsScraped` and `scrapeErrors` after the ipamd datums: the whole datum set of a
    /// round, the same whether its scrapes came over the network or from files.
    pub fn finish_with_self_metrics(self, timestamp: SystemTime) -> (Round, RoundStats) {
        let cluster_id = self.aggregator.options.cluster_id.clone();
        let (mut round, stats) = self.finish(timestamp);
        let counts = RoundCounts::from_stats(&stats);
        round
            .datums
            .extend(self_metrics(&cluster_id, timestamp, counts));
        (round, stats)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn self_metrics_carry_the_cluster_and_the_round_time() {
        let timestamp = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let datums = self_metrics(
            "prod",
            timestamp,
            RoundCounts {
                pods_scraped: 47,
                scrape_errors: 3,
            },
        );
        let summary: Vec<(&str, f64)> = datums
            .iter()
            .map(|datum| (datum.metric_name.as_str(), datum.value))
            .collect();
        assert_eq!(summary, [("podsScraped", 47.0), ("scrapeErrors", 3.0)]);
        for datum in &datums {
            assert_eq!(datum.timestamp, timestamp);
            assert_eq!(datum.unit, Unit::Count);
            assert_eq!(
                datum.dimensions,
                [Dimension {
                    name: "CLUSTER_ID".to_owned(),
                    value: "prod".to_owned()
                }]
            );
        }
    }
}
