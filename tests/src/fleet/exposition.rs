//! Turns a node's simulated state into the Prometheus text exposition (format 0.0.4) that
//! ipamd serves, and into the structured record of what was served.
//!
//! One function, [`emit`], walks the families in the order client_golang's registry emits
//! them (sorted by name, series sorted by label values) and hands each family and sample to
//! a sink. The text renderer and the recorder are two sinks of that same walk, so the body a
//! client receives and the values a test reads back from [`ServedExposition`] cannot differ.

use std::fmt::Write as _;

use super::simulation::{
    ADDRESSES_PER_PREFIX, EC2_FUNCTIONS, GC_QUANTILES, IPAMD_ACTIONS, PoolShape,
    RECONCILE_FUNCTIONS, SimState, XorShift,
};

/// The `# TYPE` of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
    Summary,
    Histogram,
}

impl MetricType {
    /// The word used on the `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Summary => "summary",
            Self::Histogram => "histogram",
        }
    }
}

/// The five families ipamd moved between gauge and counter across versions (#3093, reverted
/// in v1.19.2, restored in v1.19.4). With type drift on, the fleet serves them as gauges.
pub const TYPE_DRIFT_FAMILIES: [&str; 5] = [
    "awscni_add_ip_req_count",
    "awscni_pod_eni_error_count",
    "awscni_aws_api_error_count",
    "awscni_force_removed_enis",
    "awscni_force_removed_ips",
];

/// One sample line: the full sample name (with `_sum`, `_count` or `_bucket` where the family
/// has them), its labels in the order they were served, and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct ServedSample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl ServedSample {
    /// True when the sample carries exactly these labels, in any order.
    pub fn has_labels(&self, labels: &[(&str, &str)]) -> bool {
        self.labels.len() == labels.len()
            && labels.iter().all(|(name, value)| {
                self.labels
                    .iter()
                    .any(|(served_name, served_value)| served_name == name && served_value == value)
            })
    }

    /// The value of one label, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(label_name, _)| label_name == name)
            .map(|(_, value)| value.as_str())
    }
}

/// One metric family as served: HELP, TYPE and every sample.
#[derive(Clone, Debug, PartialEq)]
pub struct ServedFamily {
    pub name: String,
    pub help: String,
    pub metric_type: MetricType,
    pub samples: Vec<ServedSample>,
}

/// Exactly what one node served in one successful scrape, so tests can compute the expected
/// cluster aggregates without going through the parser under test.
#[derive(Clone, Debug, PartialEq)]
pub struct ServedExposition {
    /// The node's scrape count after this scrape: 1 for the first exposition it served.
    pub sequence: u64,
    /// The pod that served it (it changes with [`super::Fleet::replace_node`]).
    pub pod_name: String,
    pub pod_uid: String,
    pub node_name: String,
    /// Whether the five drifting families were served as gauges.
    pub type_drift: bool,
    /// The size the body was padded to with `Fault::Oversized`, if it was.
    pub padded_to: Option<usize>,
    pub families: Vec<ServedFamily>,
    /// The exact body that was sent.
    pub body: String,
}

impl ServedExposition {
    /// The family with this name, if it was served.
    pub fn family(&self, name: &str) -> Option<&ServedFamily> {
        self.families.iter().find(|family| family.name == name)
    }

    /// The `# TYPE` a family was served with.
    pub fn metric_type(&self, family: &str) -> Option<MetricType> {
        self.family(family).map(|family| family.metric_type)
    }

    /// Every sample with this sample name (for example `awscni_ec2api_req_count` or
    /// `awscni_aws_api_latency_ms_count`), across all label sets.
    pub fn samples<'a>(&'a self, sample_name: &'a str) -> impl Iterator<Item = &'a ServedSample> {
        self.families
            .iter()
            .flat_map(|family| family.samples.iter())
            .filter(move |sample| sample.name == sample_name)
    }

    /// The value of the sample with exactly these labels (order does not matter). Use an
    /// empty slice for an unlabelled family such as `awscni_assigned_ip_addresses`.
    pub fn value(&self, sample_name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples(sample_name)
            .find(|sample| sample.has_labels(labels))
            .map(|sample| sample.value)
    }

    /// The sum over every series of a sample name, or `None` when no such sample was served.
    pub fn sum(&self, sample_name: &str) -> Option<f64> {
        let mut samples = self.samples(sample_name).peekable();
        samples.peek()?;
        Some(samples.map(|sample| sample.value).sum())
    }
}

/// The per-node naming that shows up in label values: ENI ids and the addresses of the pool.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NodeLayout {
    pub(crate) shape: PoolShape,
    /// Whether a labelled series appears only once it was first touched, as client_golang's
    /// vectors do. When false every known series is always served (zero when untouched).
    pub(crate) sparse_vectors: bool,
    pub(crate) connmark_backend: &'static str,
    pub(crate) go_version: &'static str,
    pub(crate) max_fds: u64,
    /// Seconds since the Unix epoch at which the node's simulated clock reads zero.
    pub(crate) epoch_seconds: f64,
    /// `(ENI position in the pool, ENI id)`, sorted by id.
    enis_by_id: Vec<(u32, String)>,
    /// `(position in the pool, CIDR)`, sorted by the CIDR string as client_golang sorts.
    cidrs_by_text: Vec<(u32, String)>,
}

impl NodeLayout {
    /// Lays out a node's ENIs and pool addresses. `ordinal` is the node's position in its
    /// fleet and keeps every node's VPC addresses in a /24 of its own.
    pub(crate) fn new(
        shape: PoolShape,
        ordinal: usize,
        rng: &mut XorShift,
        sparse_vectors: bool,
        epoch_seconds: f64,
    ) -> Self {
        let mut enis_by_id: Vec<(u32, String)> = (0..shape.profile.max_enis)
            .map(|position| {
                // ENI ids are "eni-" and 17 hex digits.
                let id = format!("eni-{:x}{:016x}", rng.next_u64() & 0xf, rng.next_u64());
                (position, id)
            })
            .collect();
        enis_by_id.sort_by(|left, right| left.1.cmp(&right.1));

        let second_octet = 16 + (ordinal / 256) % 200;
        let third_octet = ordinal % 256;
        let mut cidrs_by_text: Vec<(u32, String)> = if shape.prefix_delegation {
            (0..shape.max_prefixes())
                .map(|prefix| {
                    let first = (prefix + 1) * ADDRESSES_PER_PREFIX;
                    (
                        prefix,
                        format!("10.{second_octet}.{third_octet}.{first}/28"),
                    )
                })
                .collect()
        } else {
            (0..shape.max_ips())
                .map(|slot| {
                    (
                        slot,
                        format!("10.{second_octet}.{third_octet}.{}/32", slot + 10),
                    )
                })
                .collect()
        };
        cidrs_by_text.sort_by(|left, right| left.1.cmp(&right.1));

        let connmark_backend = if rng.one_in(4) {
            "nftables"
        } else {
            "iptables"
        };
        Self {
            shape,
            sparse_vectors,
            connmark_backend,
            go_version: "go1.24.6",
            max_fds: 1_048_576,
            epoch_seconds,
            enis_by_id,
            cidrs_by_text,
        }
    }
}

/// Receives the families and samples of one exposition, in serving order.
pub(crate) trait ExpositionSink {
    fn family(&mut self, name: &'static str, help: &'static str, metric_type: MetricType);
    fn sample(&mut self, suffix: &'static str, labels: &[(&str, &str)], value: f64);
}

/// Renders the text format, byte for byte the way client_golang's expfmt writes it.
pub(crate) struct TextRenderer {
    pub(crate) out: String,
    family: &'static str,
}

impl TextRenderer {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            out: String::with_capacity(capacity),
            family: "",
        }
    }
}

impl ExpositionSink for TextRenderer {
    fn family(&mut self, name: &'static str, help: &'static str, metric_type: MetricType) {
        self.family = name;
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        push_escaped(&mut self.out, help, false);
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(metric_type.as_str());
        self.out.push('\n');
    }

    fn sample(&mut self, suffix: &'static str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(self.family);
        self.out.push_str(suffix);
        if !labels.is_empty() {
            self.out.push('{');
            for (position, (name, label_value)) in labels.iter().enumerate() {
                if position > 0 {
                    self.out.push(',');
                }
                self.out.push_str(name);
                self.out.push_str("=\"");
                push_escaped(&mut self.out, label_value, true);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        push_go_float(&mut self.out, value);
        self.out.push('\n');
    }
}

/// Records the families as data for [`ServedExposition`].
#[derive(Default)]
pub(crate) struct Recorder {
    pub(crate) families: Vec<ServedFamily>,
}

impl ExpositionSink for Recorder {
    fn family(&mut self, name: &'static str, help: &'static str, metric_type: MetricType) {
        self.families.push(ServedFamily {
            name: name.to_owned(),
            help: help.to_owned(),
            metric_type,
            samples: Vec::new(),
        });
    }

    fn sample(&mut self, suffix: &'static str, labels: &[(&str, &str)], value: f64) {
        if let Some(family) = self.families.last_mut() {
            let sample = ServedSample {
                name: format!("{}{suffix}", family.name),
                labels: labels
                    .iter()
                    .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                    .collect(),
                value,
            };
            family.samples.push(sample);
        }
    }
}

/// Escapes a HELP text or a label value the way the text format requires: backslash and
/// newline always, the double quote only inside label values. Almost no text needs it, so
/// the common case is one scan and one copy.
fn push_escaped(out: &mut String, text: &str, is_label_value: bool) {
    let needs_escaping = text
        .bytes()
        .any(|byte| byte == b'\\' || byte == b'\n' || (is_label_value && byte == b'"'));
    if !needs_escaping {
        out.push_str(text);
        return;
    }
    for character in text.chars() {
        match character {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if is_label_value => out.push_str("\\\""),
            other => out.push(other),
        }
    }
}

/// Formats a float like Go's `strconv.FormatFloat(v, 'g', -1, 64)`, which expfmt uses:
/// shortest round-trip digits, in exponent form when the decimal exponent is below -4 or at
/// least 6 (so 2346528 becomes `2.346528e+06`, as real Go endpoints show), and `+Inf`,
/// `-Inf`, `NaN` for the special values.
///
/// A simulated node formats ~1,300 numbers per scrape, most of them whole, so whole numbers
/// below 10^6 take the integer formatter; the rest are Rust's shortest `{:e}` digits (the
/// closest shortest round-trip digits, as Go picks them), written to the stack and laid out
/// as Go does. No allocation either way.
pub(crate) fn push_go_float(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
        return;
    }
    if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    if value == 0.0 {
        out.push_str(if value.is_sign_negative() { "-0" } else { "0" });
        return;
    }
    if value.fract() == 0.0 && value.abs() < 1e6 {
        // Exact: a whole number below 10^6 converts to i64 without loss.
        out.push_str(itoa::Buffer::new().format(value as i64));
        return;
    }
    let mut scientific = StackText::default();
    // `{:e}` of a finite f64 is at most 25 bytes; the buffer cannot overflow.
    let _ = write!(scientific, "{value:e}");
    let scientific = scientific.as_str();
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa),
    };
    // `d` or `d.ddd`: the significant digits, the first one before the point.
    let (first, rest) = mantissa.split_at(1);
    let rest = rest.strip_prefix('.').unwrap_or(rest);
    if negative {
        out.push('-');
    }
    if (-4..6).contains(&exponent) {
        if exponent < 0 {
            out.push_str("0.");
            for _ in 0..(-exponent - 1) {
                out.push('0');
            }
            out.push_str(first);
            out.push_str(rest);
        } else {
            let whole = exponent as usize;
            out.push_str(first);
            if rest.len() > whole {
                out.push_str(&rest[..whole]);
                out.push('.');
                out.push_str(&rest[whole..]);
            } else {
                out.push_str(rest);
                for _ in rest.len()..whole {
                    out.push('0');
                }
            }
        }
    } else {
        out.push_str(mantissa);
        out.push('e');
        out.push(if exponent < 0 { '-' } else { '+' });
        let magnitude = exponent.unsigned_abs();
        if magnitude < 10 {
            out.push('0');
        }
        out.push_str(itoa::Buffer::new().format(magnitude));
    }
}

/// A small text buffer on the stack, for one formatted number.
struct StackText {
    bytes: [u8; 40],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        Self {
            bytes: [0; 40],
            len: 0,
        }
    }
}

impl StackText {
    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever written, so the bytes are always UTF-8.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let end = self.len + text.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        room.copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The default histogram buckets of client_golang, as their `le` label values.
const DEFAULT_BUCKETS: [(f64, &str); 11] = [
    (0.005, "0.005"),
    (0.01, "0.01"),
    (0.025, "0.025"),
    (0.05, "0.05"),
    (0.1, "0.1"),
    (0.25, "0.25"),
    (0.5, "0.5"),
    (1.0, "1"),
    (2.5, "2.5"),
    (5.0, "5"),
    (10.0, "10"),
];

/// Which series of a vector are served: touched ones, or all of them when the node does not
/// mimic client_golang's lazily created children.
fn visible(layout: &NodeLayout, value: u64) -> bool {
    value > 0 || !layout.sparse_vectors
}

/// The counter-or-gauge type of a drifting family.
fn drifting(type_drift: bool) -> MetricType {
    if type_drift {
        MetricType::Gauge
    } else {
        MetricType::Counter
    }
}

/// Emits one node's whole exposition: the awscni_* families, then go_*, process_* and
/// promhttp_*; families in name order as the Go registry sorts them.
pub(crate) fn emit<S: ExpositionSink>(
    layout: &NodeLayout,
    state: &SimState,
    type_drift: bool,
    sink: &mut S,
) {
    emit_ipamd(layout, state, type_drift, sink);
    emit_go_runtime(layout, state, sink);
    emit_process(layout, state, sink);
    emit_promhttp(state, sink);
}

fn emit_ipamd<S: ExpositionSink>(
    layout: &NodeLayout,
    state: &SimState,
    type_drift: bool,
    sink: &mut S,
) {
    let shape = &layout.shape;
    let pool_size = if shape.prefix_delegation {
        state.prefixes_allocated
    } else {
        shape.pool_ips(state)
    };

    sink.family(
        "awscni_add_ip_req_count",
        "The number of add IP address requests",
        drifting(type_drift),
    );
    sink.sample("", &[], state.add_ip_requests as f64);

    sink.family(
        "awscni_assigned_ip_addresses",
        "The number of IP addresses assigned to pods",
        MetricType::Gauge,
    );
    sink.sample("", &[], f64::from(state.assigned_ips));

    sink.family(
        "awscni_assigned_ip_per_cidr",
        "The total number of IP addresses assigned per cidr",
        MetricType::Gauge,
    );
    for (position, cidr) in &layout.cidrs_by_text {
        if *position >= pool_size {
            continue;
        }
        // Pods take addresses in pool order: whole /32s, or a /28 filled before the next.
        let assigned = if shape.prefix_delegation {
            let before = position * ADDRESSES_PER_PREFIX;
            state
                .assigned_ips
                .saturating_sub(before)
                .min(ADDRESSES_PER_PREFIX)
        } else {
            u32::from(*position < state.assigned_ips)
        };
        sink.sample("", &[("cidr", cidr)], f64::from(assigned));
    }

    sink.family(
        "awscni_assigned_ip_per_eni",
        "The number of allocated ips partitioned by eni",
        MetricType::Gauge,
    );
    let per_eni = shape.ips_per_eni_capacity();
    for (position, eni) in &layout.enis_by_id {
        if *position >= state.enis_allocated {
            continue;
        }
        let assigned = state
            .assigned_ips
            .saturating_sub(position * per_eni)
            .min(per_eni);
        sink.sample("", &[("eni", eni)], f64::from(assigned));
    }

    if visible(layout, state.ec2_describe_eni_errors) {
        sink.family(
            "awscni_aws_api_error_count",
            "The number of times AWS API returns an error",
            drifting(type_drift),
        );
        sink.sample(
            "",
            &[
                ("api", "DescribeNetworkInterfaces"),
                ("error", "RequestLimitExceeded"),
            ],
            state.ec2_describe_eni_errors as f64,
        );
    }

    emit_latency_summary(layout, state, sink);

    if visible(layout, state.aws_utils_errors) {
        sink.family(
            "awscni_aws_utils_error_count",
            "The number of errors not handled in awsutils library",
            MetricType::Counter,
        );
        sink.sample(
            "",
            &[
                ("error", "ENI not attached"),
                ("fn", "waitForENIAndIPsAttached"),
            ],
            state.aws_utils_errors as f64,
        );
    }

    sink.family(
        "awscni_connmark_backend",
        "The connmark backend in use; the active backend's series is set to 1",
        MetricType::Gauge,
    );
    sink.sample("", &[("backend", layout.connmark_backend)], 1.0);

    sink.family(
        "awscni_connmark_reconcile_total",
        "The number of connmark Setup/Cleanup reconciliations by result",
        MetricType::Counter,
    );
    sink.sample("", &[("result", "error")], state.connmark_errors as f64);
    sink.sample(
        "",
        &[("result", "success")],
        state.connmark_successes as f64,
    );

    if visible(layout, state.del_ip_requests_pod_deleted) {
        sink.family(
            "awscni_del_ip_req_count",
            "The number of delete IP address requests",
            MetricType::Counter,
        );
        sink.sample(
            "",
            &[("reason", "PodDeleted")],
            state.del_ip_requests_pod_deleted as f64,
        );
    }

    if visible(layout, state.ec2_describe_eni_errors) {
        sink.family(
            "awscni_ec2api_error_count",
            "The number of failed EC2 APIs requests",
            MetricType::Counter,
        );
        sink.sample(
            "",
            &[("fn", "DescribeNetworkInterfaces")],
            state.ec2_describe_eni_errors as f64,
        );
    }

    sink.family(
        "awscni_ec2api_req_count",
        "The number of requests made to EC2 APIs by CNI",
        MetricType::Counter,
    );
    for (function, requests) in EC2_FUNCTIONS.iter().zip(state.ec2_requests) {
        if visible(layout, requests) {
            sink.sample("", &[("fn", function)], requests as f64);
        }
    }

    sink.family(
        "awscni_eni_allocated",
        "The number of ENIs allocated",
        MetricType::Gauge,
    );
    sink.sample("", &[], f64::from(state.enis_allocated));

    sink.family(
        "awscni_eni_max",
        "The maximum number of ENIs that can be attached to the instance, accounting for unmanaged ENIs",
        MetricType::Gauge,
    );
    sink.sample("", &[], f64::from(shape.profile.max_enis));

    sink.family(
        "awscni_force_removed_enis",
        "The number of ENIs force removed while they had assigned pods",
        drifting(type_drift),
    );
    sink.sample("", &[], state.force_removed_enis as f64);

    sink.family(
        "awscni_force_removed_ips",
        "The number of IPs force removed while they had assigned pods",
        drifting(type_drift),
    );
    sink.sample("", &[], state.force_removed_ips as f64);

    sink.family(
        "awscni_ip_max",
        "The maximum number of IP addresses that can be allocated to the instance",
        MetricType::Gauge,
    );
    sink.sample("", &[], f64::from(shape.max_ips()));

    sink.family(
        "awscni_ipamd_action_inprogress",
        "The number of ipamd actions in progress",
        MetricType::Gauge,
    );
    for (action, in_progress) in IPAMD_ACTIONS.iter().zip(state.actions_in_progress) {
        sink.sample("", &[("fn", action)], f64::from(in_progress));
    }

    if visible(layout, state.ipamd_errors) {
        sink.family(
            "awscni_ipamd_error_count",
            "The number of errors encountered in ipamd",
            MetricType::Counter,
        );
        sink.sample(
            "",
            &[("fn", "increaseIPPoolAllocIPAddressesFailed")],
            state.ipamd_errors as f64,
        );
    }

    sink.family(
        "awscni_ipamd_node_initialization_duration_seconds",
        "The duration of node initialization during IPAMD startup",
        MetricType::Histogram,
    );
    emit_single_observation(sink, &[("success", "true")], state.node_init_seconds);

    sink.family(
        "awscni_ipamd_startup_duration_seconds",
        "The duration of IPAMD startup from process start to ready to serve CNI requests",
        MetricType::Histogram,
    );
    emit_single_observation(
        sink,
        &[
            ("failure_reason", ""),
            ("success", "true"),
            ("with_api_server", "true"),
        ],
        state.startup_seconds,
    );

    sink.family(
        "awscni_no_available_ip_addresses",
        "The number of pod IP assignments that fail due to no available IP addresses",
        MetricType::Counter,
    );
    sink.sample("", &[], state.no_available_ips as f64);

    if visible(layout, state.pod_eni_errors) {
        sink.family(
            "awscni_pod_eni_error_count",
            "The number of errors encountered for pod ENIs",
            drifting(type_drift),
        );
        sink.sample(
            "",
            &[("fn", "getBranchENIsFromPodAnnotation")],
            state.pod_eni_errors as f64,
        );
    }

    if state.reconciles.iter().any(|count| visible(layout, *count)) {
        sink.family(
            "awscni_reconcile_count",
            "The number of times ipamd reconciles on ENIs and IP/Prefix addresses",
            MetricType::Counter,
        );
        for (function, count) in RECONCILE_FUNCTIONS.iter().zip(state.reconciles) {
            if visible(layout, count) {
                sink.sample("", &[("fn", function)], count as f64);
            }
        }
    }

    sink.family(
        "awscni_total_ip_addresses",
        "The total number of IP addresses",
        MetricType::Gauge,
    );
    sink.sample("", &[], f64::from(shape.pool_ips(state)));

    sink.family(
        "awscni_total_ipv4_prefixes",
        "The total number of IPv4 prefixes",
        MetricType::Gauge,
    );
    let prefixes = if shape.prefix_delegation {
        state.prefixes_allocated
    } else {
        0
    };
    sink.sample("", &[], f64::from(prefixes));
}

/// `awscni_aws_api_latency_ms`: a summary without objectives, so client_golang serves only
/// `_sum` and `_count` per series, never a quantile (aws/amazon-vpc-cni-k8s#3480).
fn emit_latency_summary<S: ExpositionSink>(layout: &NodeLayout, state: &SimState, sink: &mut S) {
    // (api, error, status, count, sum), sorted by api, then error, then status.
    let mut series: Vec<(&str, &str, &str, u64, u64)> = EC2_FUNCTIONS
        .iter()
        .enumerate()
        .map(|(index, function)| {
            (
                *function,
                "false",
                "200",
                state.ec2_latency_count[index],
                state.ec2_latency_sum_ms[index],
            )
        })
        .collect();
    series.push((
        "DescribeNetworkInterfaces",
        "true",
        "RequestLimitExceeded",
        state.throttled_latency_count,
        state.throttled_latency_sum_ms,
    ));
    series.push((
        "GetMetadata",
        "false",
        "200",
        state.imds_latency_count,
        state.imds_latency_sum_ms,
    ));
    series.sort_by(|left, right| (left.0, left.1, left.2).cmp(&(right.0, right.1, right.2)));
    series.retain(|entry| visible(layout, entry.3));
    if series.is_empty() {
        return;
    }
    sink.family(
        "awscni_aws_api_latency_ms",
        "AWS API call latency in ms",
        MetricType::Summary,
    );
    for (api, error, status, count, sum) in series {
        let labels = [("api", api), ("error", error), ("status", status)];
        sink.sample("_sum", &labels, sum as f64);
        sink.sample("_count", &labels, count as f64);
    }
}

/// A histogram child that has seen exactly one observation, as ipamd's startup histograms
/// have once the process is up.
fn emit_single_observation<S: ExpositionSink>(
    sink: &mut S,
    labels: &[(&str, &str)],
    observed: f64,
) {
    let mut with_bound: Vec<(&str, &str)> = labels.to_vec();
    with_bound.push(("le", ""));
    let bound_position = with_bound.len() - 1;
    for (bound, bound_text) in DEFAULT_BUCKETS {
        with_bound[bound_position].1 = bound_text;
        sink.sample(
            "_bucket",
            &with_bound,
            if observed <= bound { 1.0 } else { 0.0 },
        );
    }
    with_bound[bound_position].1 = "+Inf";
    sink.sample("_bucket", &with_bound, 1.0);
    sink.sample("_sum", labels, observed);
    sink.sample("_count", labels, 1.0);
}

fn emit_go_runtime<S: ExpositionSink>(layout: &NodeLayout, state: &SimState, sink: &mut S) {
    let heap_inuse = (state.heap_alloc_bytes + 1_200_000).div_ceil(8_192) * 8_192;
    let heap_sys = state.heap_sys_bytes.max(heap_inuse + 2_097_152);
    let heap_idle = heap_sys - heap_inuse;
    let heap_released = state.heap_released_bytes.min(heap_idle);
    let stack_sys = state.stack_inuse_bytes;
    let mspan_inuse = 180_000 + state.heap_objects / 40;
    let mspan_sys = mspan_inuse.div_ceil(16_384) * 16_384 + 16_320;
    let mcache_inuse = 14_400;
    let mcache_sys = 15_600;
    let buck_hash_sys = 1_456_347;
    let gc_sys = 3_540_000 + heap_sys / 64;
    let other_sys = 1_320_000 + state.goroutines * 1_024;
    let sys = heap_sys + stack_sys + mspan_sys + mcache_sys + buck_hash_sys + gc_sys + other_sys;
    let frees = state.mallocs_total.saturating_sub(state.heap_objects);
    let next_gc = (state.heap_alloc_bytes * 2).max(4_194_304);

    sink.family(
        "go_gc_duration_seconds",
        "A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.",
        MetricType::Summary,
    );
    for (quantile, value) in GC_QUANTILES.iter().zip(state.gc_pause_quantiles) {
        sink.sample("", &[("quantile", quantile)], value);
    }
    sink.sample("_sum", &[], state.gc_pause_total_seconds);
    sink.sample("_count", &[], state.gc_cycles as f64);

    let runtime_settings: [(&'static str, &'static str, MetricType, f64); 3] = [
        (
            "go_gc_gogc_percent",
            "Heap size target percentage configured by the user, otherwise 100. This value is set by the GOGC environment variable, and the runtime/debug.SetGCPercent function. Sourced from /gc/gogc:percent.",
            MetricType::Gauge,
            100.0,
        ),
        (
            "go_gc_gomemlimit_bytes",
            "Go runtime memory limit configured by the user, otherwise math.MaxInt64. This value is set by the GOMEMLIMIT environment variable, and the runtime/debug.SetMemoryLimit function. Sourced from /gc/gomemlimit:bytes.",
            MetricType::Gauge,
            i64::MAX as f64,
        ),
        (
            "go_goroutines",
            "Number of goroutines that currently exist.",
            MetricType::Gauge,
            state.goroutines as f64,
        ),
    ];
    for (name, help, metric_type, value) in runtime_settings {
        sink.family(name, help, metric_type);
        sink.sample("", &[], value);
    }

    sink.family(
        "go_info",
        "Information about the Go environment.",
        MetricType::Gauge,
    );
    sink.sample("", &[("version", layout.go_version)], 1.0);

    let memory_statistics: [(&'static str, &'static str, MetricType, f64); 23] = [
        (
            "go_memstats_alloc_bytes",
            "Number of bytes allocated in heap and currently in use. Equals to /memory/classes/heap/objects:bytes.",
            MetricType::Gauge,
            state.heap_alloc_bytes as f64,
        ),
        (
            "go_memstats_alloc_bytes_total",
            "Total number of bytes allocated in heap until now, even if released already. Equals to /gc/heap/allocs:bytes.",
            MetricType::Counter,
            state.alloc_bytes_total as f64,
        ),
        (
            "go_memstats_buck_hash_sys_bytes",
            "Number of bytes used by the profiling bucket hash table. Equals to /memory/classes/profiling/buckets:bytes.",
            MetricType::Gauge,
            buck_hash_sys as f64,
        ),
        (
            "go_memstats_frees_total",
            "Total number of heap objects frees. Equals to /gc/heap/frees:objects + /gc/heap/tiny/allocs:objects.",
            MetricType::Counter,
            frees as f64,
        ),
        (
            "go_memstats_gc_sys_bytes",
            "Number of bytes used for garbage collection system metadata. Equals to /memory/classes/metadata/other:bytes.",
            MetricType::Gauge,
            gc_sys as f64,
        ),
        (
            "go_memstats_heap_alloc_bytes",
            "Number of heap bytes allocated and currently in use, same as go_memstats_alloc_bytes. Equals to /memory/classes/heap/objects:bytes.",
            MetricType::Gauge,
            state.heap_alloc_bytes as f64,
        ),
        (
            "go_memstats_heap_idle_bytes",
            "Number of heap bytes waiting to be used. Equals to /memory/classes/heap/released:bytes + /memory/classes/heap/free:bytes.",
            MetricType::Gauge,
            heap_idle as f64,
        ),
        (
            "go_memstats_heap_inuse_bytes",
            "Number of heap bytes that are in use. Equals to /memory/classes/heap/objects:bytes + /memory/classes/heap/unused:bytes",
            MetricType::Gauge,
            heap_inuse as f64,
        ),
        (
            "go_memstats_heap_objects",
            "Number of currently allocated objects. Equals to /gc/heap/objects:objects.",
            MetricType::Gauge,
            state.heap_objects as f64,
        ),
        (
            "go_memstats_heap_released_bytes",
            "Number of heap bytes released to OS. Equals to /memory/classes/heap/released:bytes.",
            MetricType::Gauge,
            heap_released as f64,
        ),
        (
            "go_memstats_heap_sys_bytes",
            "Number of heap bytes obtained from system. Equals to /memory/classes/heap/objects:bytes + /memory/classes/heap/unused:bytes + /memory/classes/heap/released:bytes + /memory/classes/heap/free:bytes.",
            MetricType::Gauge,
            heap_sys as f64,
        ),
        (
            "go_memstats_last_gc_time_seconds",
            "Number of seconds since 1970 of last garbage collection.",
            MetricType::Gauge,
            layout.epoch_seconds + state.last_gc_at,
        ),
        (
            "go_memstats_mallocs_total",
            "Total number of heap objects allocated, both live and gc-ed. Semantically a counter version for go_memstats_heap_objects gauge. Equals to /gc/heap/allocs:objects + /gc/heap/tiny/allocs:objects.",
            MetricType::Counter,
            state.mallocs_total as f64,
        ),
        (
            "go_memstats_mcache_inuse_bytes",
            "Number of bytes in use by mcache structures. Equals to /memory/classes/metadata/mcache/inuse:bytes.",
            MetricType::Gauge,
            mcache_inuse as f64,
        ),
        (
            "go_memstats_mcache_sys_bytes",
            "Number of bytes used for mcache structures obtained from system. Equals to /memory/classes/metadata/mcache/inuse:bytes + /memory/classes/metadata/mcache/free:bytes.",
            MetricType::Gauge,
            mcache_sys as f64,
        ),
        (
            "go_memstats_mspan_inuse_bytes",
            "Number of bytes in use by mspan structures. Equals to /memory/classes/metadata/mspan/inuse:bytes.",
            MetricType::Gauge,
            mspan_inuse as f64,
        ),
        (
            "go_memstats_mspan_sys_bytes",
            "Number of bytes used for mspan structures obtained from system. Equals to /memory/classes/metadata/mspan/inuse:bytes + /memory/classes/metadata/mspan/free:bytes.",
            MetricType::Gauge,
            mspan_sys as f64,
        ),
        (
            "go_memstats_next_gc_bytes",
            "Number of heap bytes when next garbage collection will take place. Equals to /gc/heap/goal:bytes.",
            MetricType::Gauge,
            next_gc as f64,
        ),
        (
            "go_memstats_other_sys_bytes",
            "Number of bytes used for other system allocations. Equals to /memory/classes/other:bytes.",
            MetricType::Gauge,
            other_sys as f64,
        ),
        (
            "go_memstats_stack_inuse_bytes",
            "Number of bytes obtained from system for stack allocator in non-CGO environments. Equals to /memory/classes/heap/stacks:bytes.",
            MetricType::Gauge,
            state.stack_inuse_bytes as f64,
        ),
        (
            "go_memstats_stack_sys_bytes",
            "Number of bytes obtained from system for stack allocator. Equals to /memory/classes/heap/stacks:bytes + /memory/classes/os-stacks:bytes.",
            MetricType::Gauge,
            stack_sys as f64,
        ),
        (
            "go_memstats_sys_bytes",
            "Number of bytes obtained from system. Equals to /memory/classes/total:byte.",
            MetricType::Gauge,
            sys as f64,
        ),
        (
            "go_sched_gomaxprocs_threads",
            "The current runtime.GOMAXPROCS setting, or the number of operating system threads that can execute user-level Go code simultaneously. Sourced from /sched/gomaxprocs:threads.",
            MetricType::Gauge,
            f64::from(layout.shape.profile.vcpus),
        ),
    ];
    for (name, help, metric_type, value) in memory_statistics {
        sink.family(name, help, metric_type);
        sink.sample("", &[], value);
    }

    sink.family(
        "go_threads",
        "Number of OS threads created.",
        MetricType::Gauge,
    );
    sink.sample("", &[], state.os_threads as f64);
}

fn emit_process<S: ExpositionSink>(layout: &NodeLayout, state: &SimState, sink: &mut S) {
    let families: [(&'static str, &'static str, MetricType, f64); 9] = [
        (
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            MetricType::Counter,
            state.cpu_seconds,
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors.",
            MetricType::Gauge,
            layout.max_fds as f64,
        ),
        (
            "process_network_receive_bytes_total",
            "Number of bytes received by the process over the network.",
            MetricType::Counter,
            state.network_receive_bytes as f64,
        ),
        (
            "process_network_transmit_bytes_total",
            "Number of bytes sent by the process over the network.",
            MetricType::Counter,
            state.network_transmit_bytes as f64,
        ),
        (
            "process_open_fds",
            "Number of open file descriptors.",
            MetricType::Gauge,
            state.open_fds as f64,
        ),
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            MetricType::Gauge,
            state.resident_bytes as f64,
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            MetricType::Gauge,
            (layout.epoch_seconds + state.process_started_at).floor(),
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            MetricType::Gauge,
            state.virtual_bytes as f64,
        ),
        (
            "process_virtual_memory_max_bytes",
            "Maximum amount of virtual memory available in bytes.",
            MetricType::Gauge,
            u64::MAX as f64,
        ),
    ];
    for (name, help, metric_type, value) in families {
        sink.family(name, help, metric_type);
        sink.sample("", &[], value);
    }
}

fn emit_promhttp<S: ExpositionSink>(state: &SimState, sink: &mut S) {
    sink.family(
        "promhttp_metric_handler_errors_total",
        "Total number of internal errors encountered by the promhttp metric handler.",
        MetricType::Counter,
    );
    sink.sample("", &[("cause", "encoding")], 0.0);
    sink.sample("", &[("cause", "gathering")], 0.0);

    sink.family(
        "promhttp_metric_handler_requests_in_flight",
        "Current number of scrapes being served.",
        MetricType::Gauge,
    );
    sink.sample("", &[], 1.0);

    sink.family(
        "promhttp_metric_handler_requests_total",
        "Total number of scrapes by HTTP status code.",
        MetricType::Counter,
    );
    sink.sample("", &[("code", "200")], state.promhttp_successes as f64);
    sink.sample("", &[("code", "500")], 0.0);
    sink.sample("", &[("code", "503")], 0.0);
}

/// Appends comment lines until the body reaches `target` bytes. Comments are legal anywhere in
/// the text format, so the body still looks like a valid exposition, only too large.
pub(crate) fn pad_to(body: &mut String, target: usize) {
    const LINE: &str =
        "# padding: this exposition was inflated by the sandbox fleet to test body size limits\n";
    while body.len() <= target {
        body.push_str(LINE);
    }
}

/// The gauges [`crate::fleet::Fault::ExtremeValues`] overwrites, and what with.
pub(crate) const EXTREME_VALUES: [(&str, &str); 2] = [
    ("awscni_assigned_ip_addresses", "1e+200"),
    ("awscni_total_ip_addresses", "1e-200"),
];

/// Rewrites the sample lines of the [`EXTREME_VALUES`] gauges to their extreme values.
pub(crate) fn set_extreme_values(body: &mut String) {
    let mut out = String::with_capacity(body.len());
    for line in body.split_inclusive('\n') {
        let replaced = EXTREME_VALUES.iter().find_map(|(family, value)| {
            let rest = line.strip_prefix(family)?;
            rest.starts_with(' ').then(|| format!("{family} {value}\n"))
        });
        out.push_str(replaced.as_deref().unwrap_or(line));
    }
    *body = out;
}

/// The family [`unique_series`] adds its series to: a counter the publisher reads.
pub(crate) const MANY_SERIES_FAMILY: &str = "awscni_ec2api_req_count";

/// Appends `count` counter series of [`MANY_SERIES_FAMILY`] with label values no other call
/// produced (`nonce` differs per call), in a block of their own: the text format lets a
/// family's samples come in more than one block, and the publisher must still hold them all.
pub(crate) fn unique_series(body: &mut String, count: usize, nonce: u64) {
    use std::fmt::Write as _;
    let _ = writeln!(body, "# TYPE {MANY_SERIES_FAMILY} counter");
    for index in 0..count {
        let _ = writeln!(body, "{MANY_SERIES_FAMILY}{{fn=\"n{nonce}s{index}\"}} 1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extreme_values_replace_only_the_two_gauge_samples() {
        let mut body = "# HELP awscni_assigned_ip_addresses x\n# TYPE awscni_assigned_ip_addresses gauge\nawscni_assigned_ip_addresses 12\nawscni_total_ip_addresses 40\nawscni_assigned_ip_addresses_other 3\n".to_owned();
        set_extreme_values(&mut body);
        assert_eq!(
            body,
            "# HELP awscni_assigned_ip_addresses x\n# TYPE awscni_assigned_ip_addresses gauge\nawscni_assigned_ip_addresses 1e+200\nawscni_total_ip_addresses 1e-200\nawscni_assigned_ip_addresses_other 3\n"
        );
    }

    #[test]
    fn unique_series_are_distinct_across_calls_and_lines() {
        let mut first = String::new();
        unique_series(&mut first, 1000, 1);
        let mut second = String::new();
        unique_series(&mut second, 1000, 2);
        let series: std::collections::HashSet<&str> = first
            .lines()
            .chain(second.lines())
            .filter(|line| !line.starts_with('#'))
            .collect();
        assert_eq!(series.len(), 2000);
        assert!(
            series
                .iter()
                .all(|line| line.starts_with("awscni_ec2api_req_count{fn=\"n")
                    && line.ends_with("\"} 1"))
        );
        assert_eq!(
            first.lines().next(),
            Some("# TYPE awscni_ec2api_req_count counter")
        );
    }

    fn go_float(value: f64) -> String {
        let mut out = String::new();
        push_go_float(&mut out, value);
        out
    }

    #[test]
    fn floats_are_formatted_as_go_formats_them() {
        let cases = [
            (0.0, "0"),
            (42.0, "42"),
            (5120.0, "5120"),
            (999_999.0, "999999"),
            (1_048_576.0, "1.048576e+06"),
            (2_346_528.0, "2.346528e+06"),
            (1.734, "1.734"),
            (0.0001, "0.0001"),
            (3.7322e-5, "3.7322e-05"),
            (i64::MAX as f64, "9.223372036854776e+18"),
            (-2.5, "-2.5"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (value, expected) in cases {
            assert_eq!(go_float(value), expected, "{value}");
        }
    }

    /// The straightforward formatting the fast one replaced: Rust's shortest `{:e}` digits,
    /// laid out as Go does.
    fn go_float_reference(value: f64) -> String {
        if value.is_nan() || value.is_infinite() || value == 0.0 {
            return go_float(value);
        }
        let scientific = format!("{value:e}");
        let (mantissa, exponent) = scientific.split_once('e').expect("{:e} has an e");
        let exponent: i32 = exponent.parse().expect("a decimal exponent");
        if (-4..6).contains(&exponent) {
            format!("{value}")
        } else {
            let sign = if exponent < 0 { '-' } else { '+' };
            format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs())
        }
    }

    #[test]
    fn fast_float_formatting_matches_the_reference_over_many_values() {
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut checked = 0;
        for _ in 0..200_000 {
            let bits = next();
            // Every exponent and mantissa, plus the scales the simulation produces.
            let candidates = [
                f64::from_bits(bits),
                (bits % 10_000_000) as f64 / 1000.0,
                (bits % 100_000_000) as f64,
                (bits % 1000) as f64 * 1e-7,
                -((bits % 1_000_000) as f64) / 7.0,
            ];
            for value in candidates {
                if value.is_finite() {
                    assert_eq!(go_float(value), go_float_reference(value), "{value:e}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 900_000);
        for value in [
            1e-5,
            1e-4,
            0.5,
            123_456.5,
            999_999.5,
            1e6,
            1e21,
            5e-324,
            f64::MAX,
        ] {
            assert_eq!(go_float(value), go_float_reference(value), "{value:e}");
        }
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut out = String::new();
        push_escaped(&mut out, "a\\b\"c\nd", true);
        assert_eq!(out, "a\\\\b\\\"c\\nd");
        let mut out = String::new();
        push_escaped(&mut out, "say \"hi\"\n", false);
        assert_eq!(out, "say \"hi\"\\n");
    }
}
