//! Publishing to CloudWatch: a bounded queue of datums, flushed in PutMetricData calls of
//! at most 1000 datums and at most 1 MB (estimated conservatively), after the SDK's standard
//! retry. When CloudWatch stays unreachable the queue keeps the newest data up to its
//! capacity and drops the oldest, counting and logging what it dropped; it never grows
//! without limit. NaN and infinities are never queued.
//!
//! In `run` the uploads happen in their own task ([`CloudWatchPublisher::spawn_uploader`]),
//! so a CloudWatch that hangs never delays a round: rounds keep queueing with their own
//! timestamps and the task sends them oldest first once CloudWatch answers.
//!
//! A batch CloudWatch refuses as invalid is split in halves and each half sent again, down
//! to single datums, so that only the datums CloudWatch refuses are lost; each of those is
//! named in a warning and counted in [`CloudWatchPublisher::rejected_total`].
//!
//! With leader election the upload task sends only while this replica leads
//! ([`Leadership::leads_now`], which turns false at the renewal deadline even before the
//! election task says so): a call in flight when leadership ends is abandoned (the SDK's
//! retries of it included) and its batch stays queued, like everything else queued, until
//! this replica leads again; on shutdown as a standby it is dropped with a warning. So two
//! replicas never send at the same time. An abandoned call may have reached CloudWatch, so
//! its batch can be sent twice: delivery is at least once, as after any timeout.
//!
//! The SDK configuration comes from [`crate::edge::aws_config_loader`] (the default chains
//! and one explicit rustls+ring HTTP client), with the region given explicitly so that IMDS
//! is never asked for it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use aws_config::{Region, SdkConfig};
use aws_sdk_cloudwatch::error::{DisplayErrorContext, SdkError};
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension as CwDimension, MetricDatum, StandardUnit};
use tokio::sync::{Notify, watch};

use crate::leader::Leadership;
use tokio::task::JoinHandle;

use crate::datum::{Datum, Unit};
use crate::edge::aws_config_loader;

/// CloudWatch's limit of datums per PutMetricData call.
pub const MAX_DATUMS_PER_CALL: usize = 1000;
/// CloudWatch's limit of bytes per PutMetricData request.
pub const MAX_BYTES_PER_CALL: usize = 1_000_000;
/// The smallest byte budget a batch may be configured with: room for one large datum.
pub const MIN_BATCH_BYTES: usize = 16 * 1024;
/// What the request itself costs besides its datums (namespace, envelope, headers).
const REQUEST_OVERHEAD_BYTES: usize = 4 * 1024;

/// Why a flush stopped before the queue was empty.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(
        "PutMetricData to namespace {namespace} failed after the SDK's retries; {queued} datums \
         stay queued and are sent again once CloudWatch answers: {message}"
    )]
    Transient {
        namespace: String,
        queued: usize,
        message: String,
    },
    #[error(
        "stopped sending to CloudWatch namespace {namespace}: this replica no longer leads; \
         {queued} datums stay queued until it leads again"
    )]
    NotLeading { namespace: String, queued: usize },
}

/// Why a flush stopped before the queue was empty.
enum Halt {
    /// A call failed after the SDK's retries.
    Transient(String),
    /// This replica stopped leading.
    NotLeading,
}

/// Loads the SDK configuration for CloudWatch in `region`, with the PutMetricData timeouts.
pub async fn load_sdk_config(region: &str, attempt_timeout: Duration) -> SdkConfig {
    // Three attempts (the standard retry's) fit in one call.
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_timeout(attempt_timeout * 3)
        .operation_attempt_timeout(attempt_timeout)
        .build();
    aws_config_loader()
        .region(Region::new(region.to_owned()))
        .timeout_config(timeouts)
        .load()
        .await
}

/// What one flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlushReport {
    pub calls: usize,
    pub datums_sent: usize,
    /// Datums CloudWatch refused as invalid (4xx other than throttling) even alone in a
    /// call; dropped, since resending them would fail the same way.
    pub datums_rejected: usize,
}

/// How CloudWatch answered one call.
enum CallOutcome {
    Accepted,
    /// The request is invalid and would fail again (e.g. a value out of range).
    Refused(String),
    /// Throttling, a 5xx, a timeout, no connection: worth sending again later.
    Failed(String),
}

/// The bounded queue and its CloudWatch client. Shared (`Arc`) between the rounds, which
/// queue, and the upload task, which sends.
pub struct CloudWatchPublisher {
    client: aws_sdk_cloudwatch::Client,
    namespace: String,
    queue: Mutex<DatumQueue>,
    /// Held for a whole flush, so that two flushes never send the same batch.
    flushing: tokio::sync::Mutex<()>,
    /// Wakes the upload task when a round queued datums.
    queued_signal: Notify,
    rejected_total: AtomicU64,
    batch_datums: usize,
    batch_bytes: usize,
}

impl CloudWatchPublisher {
    /// A publisher to `namespace` that keeps at most `queue_capacity` datums while
    /// CloudWatch cannot be reached and sends at most `batch_datums` datums and
    /// `batch_bytes` estimated bytes per call (both within CloudWatch's limits).
    pub fn new(
        sdk_config: &SdkConfig,
        namespace: &str,
        queue_capacity: usize,
        batch_datums: usize,
        batch_bytes: usize,
    ) -> Self {
        CloudWatchPublisher {
            client: aws_sdk_cloudwatch::Client::new(sdk_config),
            namespace: namespace.to_owned(),
            queue: Mutex::new(DatumQueue::new(queue_capacity)),
            flushing: tokio::sync::Mutex::new(()),
            queued_signal: Notify::new(),
            rejected_total: AtomicU64::new(0),
            batch_datums: batch_datums.clamp(1, MAX_DATUMS_PER_CALL),
            batch_bytes: batch_bytes.clamp(MIN_BATCH_BYTES, MAX_BYTES_PER_CALL),
        }
    }

    /// The queue; a panic while it was held cannot leave it inconsistent (every method
    /// changes it in one step), so poisoning is ignored.
    fn queue(&self) -> MutexGuard<'_, DatumQueue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a round's datums (non-finite values are left out and counted as rejected)
    /// and wakes the upload task.
    pub fn enqueue(&self, datums: Vec<Datum>) {
        let left_out = self.queue().push(datums);
        self.count_rejected(left_out);
        self.queued_signal.notify_one();
    }

    /// Counts `count` more datums that CloudWatch refused or would refuse.
    fn count_rejected(&self, count: usize) {
        self.rejected_total
            .fetch_add(count as u64, Ordering::Relaxed);
    }

    /// How many datums wait to be sent.
    pub fn queued(&self) -> usize {
        self.queue().len()
    }

    /// How many datums the queue dropped since start because it was full.
    pub fn dropped_total(&self) -> u64 {
        self.queue().dropped_total()
    }

    /// How many datums were left out since start because CloudWatch refused them or would
    /// refuse their value.
    pub fn rejected_total(&self) -> u64 {
        self.rejected_total.load(Ordering::Relaxed)
    }

    /// Sends what is queued, oldest first, batch by batch, until the queue is empty. Stops
    /// at the first call that fails transiently (after the SDK's retries) and keeps what
    /// was not sent queued. A refused batch is split until only the refused datums are
    /// left out.
    pub async fn flush(&self) -> Result<FlushReport, PublishError> {
        self.flush_while(None).await
    }

    /// Like [`CloudWatchPublisher::flush`], but only while `leadership` leads: no call is
    /// started after it ends, and the call in flight is abandoned when it does (its batch
    /// stays queued).
    pub async fn flush_while_leading(
        &self,
        leadership: &Leadership,
    ) -> Result<FlushReport, PublishError> {
        self.flush_while(Some(leadership.clone())).await
    }

    async fn flush_while(
        &self,
        mut leadership: Option<Leadership>,
    ) -> Result<FlushReport, PublishError> {
        let _flushing = self.flushing.lock().await;
        let mut report = FlushReport::default();
        loop {
            let batch = self.queue().next_batch(self.batch_datums, self.batch_bytes);
            if batch.datums.is_empty() {
                return Ok(report);
            }
            let first_seq = batch.first_seq;
            let flushed = match leadership.as_mut() {
                Some(leadership) if !leadership.leads_now() => Err((first_seq, Halt::NotLeading)),
                Some(leadership) => tokio::select! {
                    flushed = self.send_splitting(batch, &mut report) => {
                        flushed.map_err(|(unsent, message)| (unsent, Halt::Transient(message)))
                    }
                    () = leadership.lost() => Err((first_seq, Halt::NotLeading)),
                },
                None => self
                    .send_splitting(batch, &mut report)
                    .await
                    .map_err(|(unsent, message)| (unsent, Halt::Transient(message))),
            };
            // Everything before `unsent` was sent or refused; what follows stays queued.
            // Datums the queue dropped meanwhile (it was full) are not counted twice.
            let unsent = match &flushed {
                Ok(end) => *end,
                Err((unsent, _)) => *unsent,
            };
            let queued = {
                let mut queue = self.queue();
                queue.remove_before(unsent);
                queue.len()
            };
            match flushed {
                Ok(_) => {}
                Err((_, Halt::Transient(message))) => {
                    return Err(PublishError::Transient {
                        namespace: self.namespace.clone(),
                        queued,
                        message,
                    });
                }
                Err((_, Halt::NotLeading)) => {
                    return Err(PublishError::NotLeading {
                        namespace: self.namespace.clone(),
                        queued,
                    });
                }
            }
        }
    }

    /// Sends `batch`; when CloudWatch refuses it as invalid, sends its halves in order,
    /// down to single datums, which are then dropped with a warning each. Returns the
    /// sequence number after the batch, or, when a call fails transiently, the sequence
    /// number of the first datum not yet sent and the error.
    async fn send_splitting(
        &self,
        batch: Batch,
        report: &mut FlushReport,
    ) -> Result<u64, (u64, String)> {
        let end = batch.first_seq + batch.datums.len() as u64;
        // Parts still to send, the next one last: sent oldest first.
        let mut pending = vec![batch];
        while let Some(part) = pending.pop() {
            report.calls += 1;
            match self.put(&part.datums).await {
                CallOutcome::Accepted => {
                    report.datums_sent += part.datums.len();
                    tracing::debug!(datums = part.datums.len(), namespace = %self.namespace, "PutMetricData sent");
                }
                CallOutcome::Refused(message) if part.datums.len() == 1 => {
                    report.datums_rejected += 1;
                    self.count_rejected(1);
                    for datum in &part.datums {
                        tracing::warn!(
                            metric = %datum.metric_name,
                            dimensions = ?datum.dimensions,
                            value = datum.value,
                            "CloudWatch refused this datum; dropping it: {message}"
                        );
                    }
                }
                CallOutcome::Refused(message) => {
                    tracing::info!(
                        datums = part.datums.len(),
                        "CloudWatch refused a batch; sending its halves to find the invalid \
                         datums: {message}"
                    );
                    let (first, second) = part.split();
                    pending.push(second);
                    pending.push(first);
                }
                CallOutcome::Failed(message) => return Err((part.first_seq, message)),
            }
        }
        Ok(end)
    }

    /// One PutMetricData call.
    async fn put(&self, datums: &[Datum]) -> CallOutcome {
        let sent = self
            .client
            .put_metric_data()
            .namespace(&self.namespace)
            .set_metric_data(Some(datums.iter().map(to_metric_datum).collect()))
            .send()
            .await;
        match sent {
            Ok(_) => CallOutcome::Accepted,
            Err(error) if is_permanent(&error) => {
                CallOutcome::Refused(DisplayErrorContext(&error).to_string())
            }
            Err(error) => CallOutcome::Failed(DisplayErrorContext(&error).to_string()),
        }
    }

    /// Starts the upload task: while `leadership` leads, it flushes whenever a round
    /// queued datums, and keeps what a failing CloudWatch did not take for its next attempt
    /// (woken by the next round, or by leading again). Once `stop` turns true it flushes one
    /// last time if it leads, and ends; the caller bounds that with the shutdown timeout
    /// (see [`CloudWatchPublisher::stop_uploader`]).
    pub fn spawn_uploader(
        self: &Arc<Self>,
        mut stop: watch::Receiver<bool>,
        mut leadership: Leadership,
    ) -> JoinHandle<()> {
        let publisher = Arc::clone(self);
        tokio::spawn(async move {
            let mut reports_open = true;
            loop {
                // Read before flushing: a stop that arrives during the flush is seen at the
                // wait below, and is followed by one more flush.
                let stopping = *stop.borrow_and_update();
                leadership.see();
                publisher.flush_logged(&leadership).await;
                if stopping {
                    return;
                }
                tokio::select! {
                    () = publisher.queued_signal.notified() => {}
                    reported = leadership.changed(), if reports_open => reports_open = reported,
                    changed = stop.changed() => {
                        if changed.is_err() {
                            // The stop sender is gone, so no stop can come: flush once more
                            // and end rather than wake without end.
                            publisher.flush_logged(&leadership).await;
                            return;
                        }
                    }
                }
            }
        })
    }

    /// One flush of the upload task, while leading, with its outcome logged.
    async fn flush_logged(&self, leadership: &Leadership) {
        match self.flush_while_leading(leadership).await {
            Ok(report) => tracing::debug!(
                calls = report.calls,
                datums = report.datums_sent,
                rejected = report.datums_rejected,
                "published to CloudWatch"
            ),
            Err(error @ PublishError::NotLeading { .. }) => tracing::info!("{error}"),
            Err(error @ PublishError::Transient { .. }) => tracing::warn!("{error}"),
        }
    }

    /// Stops the upload task started with `stop_sender`'s receiver: it sends what is
    /// queued, the batch in flight included (never twice: the same task sends it), within
    /// `timeout`; what is left then is dropped with a warning.
    pub async fn stop_uploader(
        &self,
        stop_sender: &watch::Sender<bool>,
        mut task: JoinHandle<()>,
        timeout: Duration,
    ) {
        stop_sender.send_replace(true);
        match tokio::time::timeout(timeout, &mut task).await {
            Ok(Ok(())) => {
                let queued = self.queued();
                if queued == 0 {
                    tracing::info!("flushed the CloudWatch queue");
                } else {
                    tracing::warn!(queued, "the final flush failed; dropping what is left");
                }
            }
            Ok(Err(error)) => tracing::warn!("the CloudWatch upload task failed: {error}"),
            Err(_) => {
                // Aborting drops the call in flight; it is never sent again.
                task.abort();
                tracing::warn!(
                    queued = self.queued(),
                    "the final flush did not finish within {timeout:?}; dropping what is left"
                );
            }
        }
    }
}

/// A client error that is not throttling: the request itself is wrong and would fail again.
fn is_permanent<E, R>(error: &SdkError<E, R>) -> bool
where
    E: aws_sdk_cloudwatch::error::ProvideErrorMetadata,
{
    match error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            let throttled = code.contains("Throttl") || code == "RequestLimitExceeded";
            let client_fault = matches!(
                code,
                "InvalidParameterValue"
                    | "InvalidParameterCombination"
                    | "MissingParameter"
                    | "InvalidParameterValueException"
                    | "InvalidParameterCombinationException"
                    | "MissingRequiredParameterException"
            );
            client_fault && !throttled
        }
        _ => false,
    }
}

/// One datum as the CloudWatch SDK takes it.
pub fn to_metric_datum(datum: &Datum) -> MetricDatum {
    let unit = match datum.unit {
        Unit::Count => StandardUnit::Count,
        Unit::Milliseconds => StandardUnit::Milliseconds,
    };
    let dimensions: Vec<CwDimension> = datum
        .dimensions
        .iter()
        .map(|dimension| {
            CwDimension::builder()
                .name(&dimension.name)
                .value(&dimension.value)
                .build()
        })
        .collect();
    MetricDatum::builder()
        .metric_name(&datum.metric_name)
        .value(datum.value)
        .unit(unit)
        .timestamp(DateTime::from(datum.timestamp))
        .set_dimensions(Some(dimensions))
        .build()
}

/// A conservative estimate of one datum's share of a request, in the most verbose wire
/// format CloudWatch accepts (the query protocol, where every field name repeats the full
/// member path, e.g. `MetricData.member.1000.Dimensions.member.30.Value=`). CBOR and JSON
/// are smaller, and compression makes them smaller still.
pub fn estimated_datum_bytes(datum: &Datum) -> usize {
    // Field paths and separators for name, value, unit, timestamp and storage resolution,
    // with room for the longest numbers and an ISO timestamp.
    const FIXED: usize = 256;
    // The field paths of one dimension's name and value.
    const PER_DIMENSION: usize = 96;
    // Values may need percent-encoding, which triples a byte at most.
    let escaped = |text: &str| text.len() * 3;
    FIXED
        + escaped(&datum.metric_name)
        + datum
            .dimensions
            .iter()
            .map(|dimension| PER_DIMENSION + escaped(&dimension.name) + escaped(&dimension.value))
            .sum::<usize>()
}

/// Datums waiting for CloudWatch, oldest first, never more than `capacity`. Every datum
/// has a sequence number, so that a flush can remove exactly what it sent even when the
/// queue dropped its oldest datums meanwhile.
#[derive(Debug)]
pub struct DatumQueue {
    datums: VecDeque<Datum>,
    /// The sequence number of `datums[0]`.
    front_seq: u64,
    capacity: usize,
    dropped_total: u64,
}

/// The datums of one call, cloned from the queue, and the sequence number of the first.
#[derive(Debug, Clone)]
pub struct Batch {
    pub first_seq: u64,
    pub datums: Vec<Datum>,
}

impl Batch {
    /// The first half and the rest (a batch of one gives one and none).
    fn split(mut self) -> (Batch, Batch) {
        let half = self.datums.len().div_ceil(2);
        let rest = self.datums.split_off(half);
        let second = Batch {
            first_seq: self.first_seq + half as u64,
            datums: rest,
        };
        (self, second)
    }
}

impl DatumQueue {
    pub fn new(capacity: usize) -> Self {
        DatumQueue {
            datums: VecDeque::new(),
            front_seq: 0,
            capacity: capacity.max(1),
            dropped_total: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.datums.len()
    }

    pub fn is_empty(&self) -> bool {
        self.datums.is_empty()
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// Appends datums, leaving out non-finite values, and drops the oldest beyond capacity.
    /// Returns how many were left out as non-finite.
    pub fn push(&mut self, datums: Vec<Datum>) -> usize {
        let mut non_finite = 0_usize;
        for datum in datums {
            if datum.value.is_finite() {
                self.datums.push_back(datum);
            } else {
                non_finite += 1;
            }
        }
        if non_finite > 0 {
            tracing::warn!(
                datums = non_finite,
                "left out datums whose value is NaN or infinite"
            );
        }
        let excess = self.datums.len().saturating_sub(self.capacity);
        if excess > 0 {
            self.datums.drain(..excess);
            self.front_seq += excess as u64;
            self.dropped_total += excess as u64;
            tracing::warn!(
                dropped = excess,
                dropped_total = self.dropped_total,
                capacity = self.capacity,
                "the CloudWatch queue is full; dropped the oldest datums"
            );
        }
        non_finite
    }

    /// How many datums from the front fit in one call of at most `max_datums` datums and
    /// `max_bytes` estimated bytes. At least one, unless the queue is empty, so that a
    /// single oversized datum cannot block the queue (CloudWatch then refuses it and it is
    /// dropped).
    pub fn next_batch_len(&self, max_datums: usize, max_bytes: usize) -> usize {
        let budget = max_bytes.saturating_sub(REQUEST_OVERHEAD_BYTES);
        let mut used = 0_usize;
        let mut count = 0_usize;
        for datum in self.datums.iter().take(max_datums) {
            let size = estimated_datum_bytes(datum);
            if count > 0 && used + size > budget {
                break;
            }
            used += size;
            count += 1;
        }
        count
    }

    /// The next call's datums: the [`DatumQueue::next_batch_len`] oldest. They stay queued
    /// until [`DatumQueue::remove_before`] removes them, once CloudWatch has answered.
    pub fn next_batch(&self, max_datums: usize, max_bytes: usize) -> Batch {
        let batch_len = self.next_batch_len(max_datums, max_bytes);
        Batch {
            first_seq: self.front_seq,
            datums: self.datums.iter().take(batch_len).cloned().collect(),
        }
    }

    /// Removes the datums whose sequence number is below `seq` (those still queued).
    pub fn remove_before(&mut self, seq: u64) {
        let count = usize::try_from(seq.saturating_sub(self.front_seq))
            .unwrap_or(usize::MAX)
            .min(self.datums.len());
        self.datums.drain(..count);
        self.front_seq += count as u64;
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::datum::Dimension;

    fn datum(name: &str, value: f64, dimension_value_len: usize) -> Datum {
        Datum {
            metric_name: name.to_owned(),
            value,
            unit: Unit::Count,
            dimensions: vec![Dimension {
                name: "CLUSTER_ID".to_owned(),
                value: "c".repeat(dimension_value_len),
            }],
            timestamp: SystemTime::UNIX_EPOCH,
        }
    }

    /// A queue of `count` datums `m0`, `m1`, ... whose dimension values are
    /// `dimension_value_len` bytes long.
    fn queue_of(count: usize, dimension_value_len: usize) -> DatumQueue {
        let mut queue = DatumQueue::new(5000);
        queue.push(
            (0..count)
                .map(|index| datum(&format!("m{index}"), 1.0, dimension_value_len))
                .collect(),
        );
        queue
    }

    #[test]
    fn batches_stop_at_1000_datums() {
        let queue = queue_of(2500, 4);
        assert_eq!(
            queue.next_batch_len(MAX_DATUMS_PER_CALL, MAX_BYTES_PER_CALL),
            1000
        );
    }

    #[test]
    fn batches_are_taken_oldest_first_and_stay_queued_until_removed() {
        let mut queue = queue_of(2500, 4);
        let mut sizes = Vec::new();
        let mut first_names = Vec::new();
        while !queue.is_empty() {
            let batch = queue.next_batch(MAX_DATUMS_PER_CALL, MAX_BYTES_PER_CALL);
            assert_eq!(queue.len(), 2500 - sizes.iter().sum::<usize>());
            first_names.push(batch.datums[0].metric_name.clone());
            sizes.push(batch.datums.len());
            queue.remove_before(batch.first_seq + batch.datums.len() as u64);
        }
        assert_eq!(sizes, [1000, 1000, 500]);
        assert_eq!(first_names, ["m0", "m1000", "m2000"]);
        queue.remove_before(u64::MAX);
        assert!(queue.is_empty());
    }

    #[test]
    fn batches_stop_before_the_byte_budget() {
        // Each datum is estimated at well over 1 KB, so 1000 of them exceed 1 MB.
        let queue = queue_of(1000, 256);
        let batch = queue.next_batch_len(MAX_DATUMS_PER_CALL, MAX_BYTES_PER_CALL);
        assert!(batch < 1000, "{batch}");
        let bytes: usize = queue
            .datums
            .iter()
            .take(batch)
            .map(estimated_datum_bytes)
            .sum();
        assert!(bytes + REQUEST_OVERHEAD_BYTES <= MAX_BYTES_PER_CALL);
        let with_one_more: usize = queue
            .datums
            .iter()
            .take(batch + 1)
            .map(estimated_datum_bytes)
            .sum();
        assert!(with_one_more + REQUEST_OVERHEAD_BYTES > MAX_BYTES_PER_CALL);
    }

    #[test]
    fn the_estimate_exceeds_the_json_size() {
        let sample = datum("assignIPAddresses", 123_456.789, 40);
        let json = serde_json::to_string(&sample).expect("datum serializes");
        assert!(estimated_datum_bytes(&sample) > json.len() * 2);
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts() {
        let mut queue = DatumQueue::new(3);
        queue.push(vec![datum("a", 1.0, 1), datum("b", 2.0, 1)]);
        queue.push(vec![datum("c", 3.0, 1), datum("d", 4.0, 1)]);
        let names: Vec<&str> = queue
            .datums
            .iter()
            .map(|d| d.metric_name.as_str())
            .collect();
        assert_eq!(names, ["b", "c", "d"]);
        assert_eq!(queue.dropped_total(), 1);
    }

    #[test]
    fn a_sent_batch_is_removed_exactly_even_when_the_queue_dropped_meanwhile() {
        let mut queue = DatumQueue::new(4);
        queue.push(vec![
            datum("a", 1.0, 1),
            datum("b", 2.0, 1),
            datum("c", 3.0, 1),
        ]);
        let batch = queue.next_batch(2, MAX_BYTES_PER_CALL);
        assert_eq!(batch.first_seq, 0);
        // While a and b are in flight, two more rounds arrive and the full queue drops a
        // and b.
        queue.push(vec![
            datum("d", 4.0, 1),
            datum("e", 5.0, 1),
            datum("f", 6.0, 1),
        ]);
        queue.remove_before(batch.first_seq + batch.datums.len() as u64);
        let names: Vec<&str> = queue
            .datums
            .iter()
            .map(|d| d.metric_name.as_str())
            .collect();
        assert_eq!(names, ["c", "d", "e", "f"]);
        assert_eq!(queue.dropped_total(), 2);
    }

    #[test]
    fn a_split_batch_keeps_order_and_sequence_numbers() {
        let batch = Batch {
            first_seq: 10,
            datums: (0..5)
                .map(|index| datum(&format!("m{index}"), 1.0, 1))
                .collect(),
        };
        let (first, second) = batch.split();
        assert_eq!((first.first_seq, first.datums.len()), (10, 3));
        assert_eq!((second.first_seq, second.datums.len()), (13, 2));
        assert_eq!(second.datums[0].metric_name, "m3");
    }

    #[test]
    fn non_finite_values_are_never_queued() {
        let mut queue = DatumQueue::new(10);
        let left_out = queue.push(vec![
            datum("nan", f64::NAN, 1),
            datum("inf", f64::INFINITY, 1),
            datum("neg", f64::NEG_INFINITY, 1),
            datum("ok", 0.0, 1),
        ]);
        assert_eq!(left_out, 3);
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.next_batch_len(1000, MAX_BYTES_PER_CALL), 1);
    }

    #[test]
    fn an_empty_queue_has_no_batch() {
        assert_eq!(
            DatumQueue::new(1).next_batch_len(1000, MAX_BYTES_PER_CALL),
            0
        );
        assert!(DatumQueue::new(1).is_empty());
    }
}
