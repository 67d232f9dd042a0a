//! The deterministic model of one ipamd process: its IP pool, its counters and its Go
//! runtime statistics, advanced one simulated scrape interval at a time.
//!
//! Everything here is pure data: no clocks, no I/O and no global random source. A node's
//! whole history follows from its seed, so a test that scrapes the same fleet the same way
//! sees the same numbers on every run.

/// The simulated time that passes between two scrapes, in seconds. It matches the
/// publisher's default `METRIC_UPDATE_INTERVAL`, so the counter deltas look like real ones.
pub(crate) const STEP_SECONDS: f64 = 30.0;

/// A tiny xorshift64* generator. Each node owns one, so nodes never share random state and a
/// node's numbers do not depend on how often other nodes were scraped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct XorShift {
    state: u64,
}

impl XorShift {
    /// Builds a generator from several seed parts (fleet seed, node index, ...), mixing them
    /// with splitmix64 so that neighbouring indices give unrelated streams.
    pub(crate) fn seeded(parts: &[u64]) -> Self {
        let mut state = 0x243F_6A88_85A3_08D3_u64;
        for part in parts {
            state = splitmix64(state ^ part);
        }
        // xorshift never leaves the all-zero state, so that one seed must be avoided.
        if state == 0 {
            state = 0x9E37_79B9_7F4A_7C15;
        }
        Self { state }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `low..=high`. The modulo bias is irrelevant for a simulation.
    pub(crate) fn range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.next_u64() % (high - low + 1)
    }

    /// True with a probability of one in `odds`.
    pub(crate) fn one_in(&mut self, odds: u64) -> bool {
        odds <= 1 || self.next_u64().is_multiple_of(odds)
    }

    /// A float in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
    }

    /// A float in `[low, high)`.
    pub(crate) fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }
}

/// The splitmix64 finaliser, used to spread seeds before they enter xorshift.
pub(crate) fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The EC2 instance shape of a node: it bounds the ENIs and IPs ipamd can allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InstanceProfile {
    pub(crate) instance_type: &'static str,
    pub(crate) max_enis: u32,
    pub(crate) ips_per_eni: u32,
    pub(crate) vcpus: u32,
    pub(crate) memory_kib: u64,
}

/// A few common node shapes; every one keeps the exposition within the size a real ipamd
/// serves (10–20 KB).
const INSTANCE_PROFILES: [InstanceProfile; 4] = [
    InstanceProfile {
        instance_type: "m5.large",
        max_enis: 3,
        ips_per_eni: 10,
        vcpus: 2,
        memory_kib: 7_910_348,
    },
    InstanceProfile {
        instance_type: "m5.xlarge",
        max_enis: 4,
        ips_per_eni: 15,
        vcpus: 4,
        memory_kib: 15_896_636,
    },
    InstanceProfile {
        instance_type: "c5.xlarge",
        max_enis: 4,
        ips_per_eni: 15,
        vcpus: 4,
        memory_kib: 7_698_884,
    },
    InstanceProfile {
        instance_type: "m5.2xlarge",
        max_enis: 4,
        ips_per_eni: 15,
        vcpus: 8,
        memory_kib: 32_392_968,
    },
];

/// Picks a node's instance shape; the smallest is the most common, as in real clusters.
pub(crate) fn pick_profile(rng: &mut XorShift) -> InstanceProfile {
    const WEIGHTED: [usize; 5] = [0, 0, 1, 2, 3];
    INSTANCE_PROFILES[WEIGHTED[rng.range(0, WEIGHTED.len() as u64 - 1) as usize]]
}

/// One /28 prefix holds 16 addresses in prefix-delegation mode.
pub(crate) const ADDRESSES_PER_PREFIX: u32 = 16;

/// The per-node address plan keeps every prefix inside the node's own /24 (see
/// `exposition::NodeLayout`), which leaves room for 15 prefixes.
pub(crate) const MAX_PREFIXES: u32 = 15;

/// The EC2 API functions ipamd calls, sorted by name as client_golang sorts label values.
/// (ENIs are tagged at creation, so modern ipamd never calls CreateTags.)
pub(crate) const EC2_FUNCTIONS: [&str; 10] = [
    "AssignPrivateIpAddresses",
    "AttachNetworkInterface",
    "CreateNetworkInterface",
    "DeleteNetworkInterface",
    "DescribeInstances",
    "DescribeNetworkInterfaces",
    "DescribeSubnets",
    "DetachNetworkInterface",
    "ModifyNetworkInterfaceAttribute",
    "UnassignPrivateIpAddresses",
];

const ASSIGN_PRIVATE_IPS: usize = 0;
const ATTACH_ENI: usize = 1;
const CREATE_ENI: usize = 2;
const DELETE_ENI: usize = 3;
const DESCRIBE_INSTANCES: usize = 4;
const DESCRIBE_ENIS: usize = 5;
const DESCRIBE_SUBNETS: usize = 6;
const DETACH_ENI: usize = 7;
const MODIFY_ENI_ATTRIBUTE: usize = 8;
const UNASSIGN_PRIVATE_IPS: usize = 9;

/// Typical latency of each EC2 call in milliseconds, used to grow the summary's `_sum`.
const EC2_LATENCY_MS: [(u64, u64); 10] = [
    (180, 620),
    (250, 900),
    (300, 1100),
    (120, 400),
    (60, 220),
    (60, 200),
    (40, 160),
    (150, 500),
    (40, 180),
    (120, 450),
];

/// The `awscni_ipamd_action_inprogress` functions, sorted by label value.
pub(crate) const IPAMD_ACTIONS: [&str; 4] = [
    "decreaseDatastorePool",
    "increaseDatastorePool",
    "nodeIPPoolReconcile",
    "nodeInit",
];

/// The `awscni_reconcile_count` functions, sorted by label value.
pub(crate) const RECONCILE_FUNCTIONS: [&str; 2] =
    ["eniDataStorePoolReconcileAdd", "eniReconcileAdd"];

/// The shape of the Go runtime's GC pause summary: min, the quartiles and max, in seconds.
pub(crate) const GC_QUANTILES: [&str; 5] = ["0", "0.25", "0.5", "0.75", "1"];

/// Everything one ipamd process exposes, as plain numbers. `Copy`, so a served exposition can
/// keep a snapshot of it for a few hundred bytes instead of the rendered text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SimState {
    rng: XorShift,
    /// Simulated seconds since the node booted; never reset, so restarts move forward in time.
    pub(crate) clock_seconds: f64,
    /// Simulated seconds at which the current ipamd process started.
    pub(crate) process_started_at: f64,
    /// How many steps the current ipamd process has lived.
    pub(crate) steps_since_start: u64,

    // The IP pool (survives restarts: ipamd restores it from its checkpoint file).
    pub(crate) enis_allocated: u32,
    pub(crate) prefixes_allocated: u32,
    pub(crate) assigned_ips: u32,
    target_assigned_ips: u32,
    /// Set by [`SimState::pin_assigned`]: the pod load holds still at the target.
    load_pinned: bool,
    pub(crate) actions_in_progress: [u32; 4],

    // ipamd counters, cumulative since the process started.
    pub(crate) add_ip_requests: u64,
    pub(crate) del_ip_requests_pod_deleted: u64,
    pub(crate) no_available_ips: u64,
    pub(crate) force_removed_enis: u64,
    pub(crate) force_removed_ips: u64,
    pub(crate) ec2_requests: [u64; 10],
    pub(crate) ec2_describe_eni_errors: u64,
    /// The successful calls of each EC2 function and their summed latency in ms.
    pub(crate) ec2_latency_count: [u64; 10],
    pub(crate) ec2_latency_sum_ms: [u64; 10],
    /// DescribeNetworkInterfaces calls throttled with RequestLimitExceeded.
    pub(crate) throttled_latency_count: u64,
    pub(crate) throttled_latency_sum_ms: u64,
    pub(crate) imds_latency_count: u64,
    pub(crate) imds_latency_sum_ms: u64,
    pub(crate) aws_utils_errors: u64,
    pub(crate) ipamd_errors: u64,
    pub(crate) pod_eni_errors: u64,
    pub(crate) reconciles: [u64; 2],
    pub(crate) connmark_successes: u64,
    pub(crate) connmark_errors: u64,
    pub(crate) startup_seconds: f64,
    pub(crate) node_init_seconds: f64,

    // Go runtime and process statistics.
    pub(crate) gc_pause_quantiles: [f64; 5],
    pub(crate) gc_cycles: u64,
    pub(crate) gc_pause_total_seconds: f64,
    pub(crate) last_gc_at: f64,
    pub(crate) goroutines: u64,
    pub(crate) os_threads: u64,
    pub(crate) heap_alloc_bytes: u64,
    pub(crate) heap_sys_bytes: u64,
    pub(crate) heap_released_bytes: u64,
    pub(crate) heap_objects: u64,
    pub(crate) alloc_bytes_total: u64,
    pub(crate) mallocs_total: u64,
    pub(crate) stack_inuse_bytes: u64,
    pub(crate) cpu_seconds: f64,
    pub(crate) open_fds: u64,
    pub(crate) resident_bytes: u64,
    pub(crate) virtual_bytes: u64,
    pub(crate) network_receive_bytes: u64,
    pub(crate) network_transmit_bytes: u64,
    pub(crate) promhttp_successes: u64,
}

/// The static facts of a node that the simulation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PoolShape {
    pub(crate) profile: InstanceProfile,
    pub(crate) prefix_delegation: bool,
}

impl PoolShape {
    /// Secondary IPs per ENI: the ENI's primary address is never handed to pods.
    pub(crate) fn slots_per_eni(&self) -> u32 {
        self.profile.ips_per_eni.saturating_sub(1).max(1)
    }

    /// `awscni_ip_max`: the most pod addresses ipamd could ever hold on this node.
    pub(crate) fn max_ips(&self) -> u32 {
        if self.prefix_delegation {
            self.max_prefixes() * ADDRESSES_PER_PREFIX
        } else {
            self.profile.max_enis * self.slots_per_eni()
        }
    }

    pub(crate) fn max_prefixes(&self) -> u32 {
        (self.profile.max_enis * self.slots_per_eni()).min(MAX_PREFIXES)
    }

    /// The number of pod addresses the current pool holds (`awscni_total_ip_addresses`).
    pub(crate) fn pool_ips(&self, state: &SimState) -> u32 {
        if self.prefix_delegation {
            state.prefixes_allocated * ADDRESSES_PER_PREFIX
        } else {
            state.enis_allocated * self.slots_per_eni()
        }
    }

    /// How many pod addresses one ENI carries when full, used to split assignments per ENI.
    pub(crate) fn ips_per_eni_capacity(&self) -> u32 {
        if self.prefix_delegation {
            self.slots_per_eni() * ADDRESSES_PER_PREFIX
        } else {
            self.slots_per_eni()
        }
    }
}

impl SimState {
    /// A node that has been up for a while: ipamd started, then ran for a seed-dependent
    /// number of scrape intervals, so nodes start with different, realistic counter values.
    pub(crate) fn warmed_up(shape: &PoolShape, seed_parts: &[u64]) -> Self {
        let mut rng = XorShift::seeded(seed_parts);
        let target = rng.range(2, u64::from(shape.max_ips() / 2).max(3)) as u32;
        let mut state = Self {
            rng,
            clock_seconds: 0.0,
            process_started_at: 0.0,
            steps_since_start: 0,
            enis_allocated: 1,
            prefixes_allocated: u32::from(shape.prefix_delegation),
            assigned_ips: 0,
            target_assigned_ips: target,
            load_pinned: false,
            actions_in_progress: [0; 4],
            add_ip_requests: 0,
            del_ip_requests_pod_deleted: 0,
            no_available_ips: 0,
            force_removed_enis: 0,
            force_removed_ips: 0,
            ec2_requests: [0; 10],
            ec2_describe_eni_errors: 0,
            ec2_latency_count: [0; 10],
            ec2_latency_sum_ms: [0; 10],
            throttled_latency_count: 0,
            throttled_latency_sum_ms: 0,
            imds_latency_count: 0,
            imds_latency_sum_ms: 0,
            aws_utils_errors: 0,
            ipamd_errors: 0,
            pod_eni_errors: 0,
            reconciles: [0; 2],
            connmark_successes: 0,
            connmark_errors: 0,
            startup_seconds: 0.0,
            node_init_seconds: 0.0,
            gc_pause_quantiles: [0.0; 5],
            gc_cycles: 0,
            gc_pause_total_seconds: 0.0,
            last_gc_at: 0.0,
            goroutines: 0,
            os_threads: 0,
            heap_alloc_bytes: 0,
            heap_sys_bytes: 0,
            heap_released_bytes: 0,
            heap_objects: 0,
            alloc_bytes_total: 0,
            mallocs_total: 0,
            stack_inuse_bytes: 0,
            cpu_seconds: 0.0,
            open_fds: 0,
            resident_bytes: 0,
            virtual_bytes: 0,
            network_receive_bytes: 0,
            network_transmit_bytes: 0,
            promhttp_successes: 0,
        };
        state.clock_seconds = state.rng.uniform(60.0, 600.0);
        state.restart_process(shape);
        let warmup_steps = state.rng.range(40, 240);
        for _ in 0..warmup_steps {
            state.step(shape);
            // Someone scraped it all along, as the helper does every interval.
            state.record_scrape();
        }
        state
    }

    /// ipamd restarted (container restart or a new pod): counters and histograms start again
    /// from what a fresh process has done by the time it serves metrics; the pool survives.
    pub(crate) fn restart_process(&mut self, shape: &PoolShape) {
        self.clock_seconds += self.rng.uniform(5.0, 25.0);
        self.process_started_at = self.clock_seconds;
        self.steps_since_start = 0;
        self.actions_in_progress = [0; 4];
        self.add_ip_requests = 0;
        self.del_ip_requests_pod_deleted = 0;
        self.no_available_ips = 0;
        self.force_removed_enis = 0;
        self.force_removed_ips = 0;
        self.ec2_requests = [0; 10];
        self.ec2_describe_eni_errors = 0;
        self.ec2_latency_count = [0; 10];
        self.ec2_latency_sum_ms = [0; 10];
        self.throttled_latency_count = 0;
        self.throttled_latency_sum_ms = 0;
        self.imds_latency_count = 0;
        self.imds_latency_sum_ms = 0;
        self.aws_utils_errors = 0;
        self.ipamd_errors = 0;
        self.pod_eni_errors = 0;
        self.reconciles = [0; 2];
        self.connmark_errors = 0;
        self.connmark_successes = 1;

        // Node initialisation: discover the instance, its subnets and its ENIs, and tag them.
        self.ec2_call(DESCRIBE_INSTANCES, 1);
        self.ec2_call(DESCRIBE_SUBNETS, 1);
        let describes = self.rng.range(1, 3);
        self.ec2_call(DESCRIBE_ENIS, describes);
        self.ec2_call(MODIFY_ENI_ATTRIBUTE, 1);
        let imds_calls = self.rng.range(30, 80);
        self.imds_calls(imds_calls);
        self.reconciles[1] = 1;
        self.startup_seconds = round_millis(self.rng.uniform(2.6, 9.5));
        self.node_init_seconds = round_millis(self.rng.uniform(0.8, 2.4));

        // A fresh Go process.
        self.gc_cycles = self.rng.range(2, 6);
        self.gc_pause_quantiles = [0.0; 5];
        self.gc_pause_total_seconds = 0.0;
        self.refresh_gc_quantiles();
        self.gc_pause_total_seconds = self.gc_pause_quantiles[2] * self.gc_cycles as f64;
        self.last_gc_at = self.clock_seconds;
        self.goroutines = self.rng.range(70, 90);
        self.os_threads = u64::from(shape.profile.vcpus) + self.rng.range(5, 9);
        self.heap_alloc_bytes = self.rng.range(3_500_000, 6_000_000);
        self.heap_sys_bytes = self.rng.range(11, 15) * 1_048_576;
        self.heap_released_bytes = self.rng.range(1, 4) * 262_144;
        self.heap_objects = self.heap_alloc_bytes / self.rng.range(150, 260);
        self.alloc_bytes_total = self.heap_alloc_bytes + self.rng.range(5_000_000, 20_000_000);
        self.mallocs_total = self.heap_objects + self.rng.range(40_000, 120_000);
        self.stack_inuse_bytes = self.rng.range(10, 16) * 65_536;
        self.cpu_seconds = round_centis(self.rng.uniform(0.4, 1.6));
        self.open_fds = self.rng.range(14, 22);
        self.resident_bytes = self.rng.range(36, 48) * 1_048_576;
        self.virtual_bytes = self.rng.range(1_280, 1_420) * 1_048_576;
        self.network_receive_bytes = self.rng.range(80_000, 400_000);
        self.network_transmit_bytes = self.rng.range(40_000, 200_000);
        self.promhttp_successes = 0;
        self.settle_pool(shape);
    }

    /// Holds the node's pod load at `assigned` IPs (at most its capacity) from now on, as
    /// when a burst of pods lands on it: no churn, no new target.
    pub(crate) fn pin_assigned(&mut self, shape: &PoolShape, assigned: u32) {
        self.assigned_ips = assigned.min(shape.max_ips());
        self.target_assigned_ips = self.assigned_ips;
        self.load_pinned = true;
        self.settle_pool(shape);
    }

    /// Advances the process by one scrape interval.
    pub(crate) fn step(&mut self, shape: &PoolShape) {
        self.clock_seconds += STEP_SECONDS;
        self.steps_since_start += 1;

        // Pod churn, pulled towards a per-node target so nodes keep different loads; none
        // while a test holds the load still.
        if !self.load_pinned {
            let below_target = u64::from(self.assigned_ips < self.target_assigned_ips);
            let above_target = u64::from(self.assigned_ips > self.target_assigned_ips);
            let adds = self.rng.range(0, 2) + below_target;
            let deletes =
                (self.rng.range(0, 2) + above_target).min(u64::from(self.assigned_ips) + adds);
            self.add_ip_requests += adds;
            self.del_ip_requests_pod_deleted += deletes;
            self.assigned_ips = (u64::from(self.assigned_ips) + adds - deletes) as u32;
            if self.rng.one_in(25) {
                let limit = u64::from(shape.max_ips() * 2 / 3).max(3);
                self.target_assigned_ips = self.rng.range(1, limit) as u32;
            }
        }
        self.settle_pool(shape);

        // The periodic reconcile describes the ENIs; sometimes EC2 throttles it.
        let describes = self.rng.range(1, 2);
        self.ec2_call(DESCRIBE_ENIS, describes);
        if self.rng.one_in(2) {
            self.reconciles[0] += 1;
        }
        if self.rng.one_in(10) {
            self.ec2_requests[DESCRIBE_ENIS] += 1;
            self.ec2_describe_eni_errors += 1;
            self.throttled_latency_count += 1;
            self.throttled_latency_sum_ms += self.rng.range(20, 90);
        }
        let imds_calls = self.rng.range(20, 60);
        self.imds_calls(imds_calls);

        // Rare failures, each at its own rate.
        if self.rng.one_in(40) {
            self.aws_utils_errors += 1;
        }
        if self.rng.one_in(50) {
            self.ipamd_errors += 1;
        }
        if self.rng.one_in(60) {
            self.pod_eni_errors += 1;
        }
        if self.rng.one_in(200) {
            self.force_removed_ips += 1;
        }
        if self.rng.one_in(600) {
            self.force_removed_enis += 1;
        }
        if self.rng.one_in(12) {
            self.connmark_successes += 1;
        }
        if self.rng.one_in(300) {
            self.connmark_errors += 1;
        }
        for action in &mut self.actions_in_progress {
            *action = u32::from(self.rng.one_in(12));
        }

        self.step_runtime();
    }

    /// Grows or shrinks the pool so it keeps one warm ENI (or prefix) beyond the assigned
    /// addresses, the way WARM_ENI_TARGET=1 / WARM_PREFIX_TARGET=1 behave, counting the EC2
    /// calls it takes. Pods that do not fit count as "no available IP addresses".
    fn settle_pool(&mut self, shape: &PoolShape) {
        let max_ips = shape.max_ips();
        if self.assigned_ips > max_ips {
            self.no_available_ips += u64::from(self.assigned_ips - max_ips);
            self.assigned_ips = max_ips;
        }
        if shape.prefix_delegation {
            let wanted = (self.assigned_ips.div_ceil(ADDRESSES_PER_PREFIX) + 1)
                .clamp(1, shape.max_prefixes());
            while self.prefixes_allocated < wanted {
                self.prefixes_allocated += 1;
                self.ec2_call(ASSIGN_PRIVATE_IPS, 1);
            }
            if self.prefixes_allocated > wanted + 1 {
                self.prefixes_allocated = wanted;
                self.ec2_call(UNASSIGN_PRIVATE_IPS, 1);
            }
            let wanted_enis = self
                .prefixes_allocated
                .div_ceil(shape.slots_per_eni())
                .clamp(1, shape.profile.max_enis);
            self.resize_enis(wanted_enis, false);
        } else {
            let wanted_enis = (self.assigned_ips.div_ceil(shape.slots_per_eni()) + 1)
                .clamp(1, shape.profile.max_enis);
            self.resize_enis(wanted_enis, true);
        }
    }

    fn resize_enis(&mut self, wanted: u32, assign_secondary_ips: bool) {
        while self.enis_allocated < wanted {
            self.enis_allocated += 1;
            self.ec2_call(CREATE_ENI, 1);
            self.ec2_call(ATTACH_ENI, 1);
            self.ec2_call(MODIFY_ENI_ATTRIBUTE, 1);
            if assign_secondary_ips {
                self.ec2_call(ASSIGN_PRIVATE_IPS, 1);
            }
            self.reconciles[1] += 1;
        }
        // ipamd frees an ENI only once a whole spare ENI beyond the warm one is idle, so the
        // pool does not flap with every pod.
        while self.enis_allocated > wanted + 1 {
            self.enis_allocated -= 1;
            self.ec2_call(DETACH_ENI, 1);
            self.ec2_call(DELETE_ENI, 1);
        }
    }

    fn ec2_call(&mut self, function: usize, calls: u64) {
        let (low, high) = EC2_LATENCY_MS[function];
        self.ec2_requests[function] += calls;
        self.ec2_latency_count[function] += calls;
        for _ in 0..calls {
            self.ec2_latency_sum_ms[function] += self.rng.range(low, high);
        }
    }

    fn imds_calls(&mut self, calls: u64) {
        self.imds_latency_count += calls;
        // IMDS answers in well under a millisecond; ipamd records whole milliseconds.
        self.imds_latency_sum_ms += self.rng.range(0, calls / 10 + 1);
    }

    fn step_runtime(&mut self) {
        let collected = self.rng.range(0, 2);
        if collected > 0 {
            self.gc_cycles += collected;
            self.refresh_gc_quantiles();
            self.gc_pause_total_seconds += self.gc_pause_quantiles[2] * collected as f64;
            self.last_gc_at = self.clock_seconds - self.rng.uniform(0.0, STEP_SECONDS);
        }
        let allocated = self.rng.range(600_000, 3_000_000);
        self.alloc_bytes_total += allocated;
        let new_objects = allocated / self.rng.range(120, 200);
        self.mallocs_total += new_objects;
        // The live heap wanders between a few and a dozen megabytes.
        let swing = self.rng.range(0, 1_600_000);
        self.heap_alloc_bytes = if self.rng.one_in(2) {
            (self.heap_alloc_bytes + swing).min(12_500_000)
        } else {
            self.heap_alloc_bytes.saturating_sub(swing).max(3_000_000)
        };
        // Live objects can grow at most by what was allocated, which keeps the derived
        // go_memstats_frees_total (mallocs - live objects) monotonic.
        self.heap_objects =
            (self.heap_alloc_bytes / self.rng.range(150, 260)).min(self.heap_objects + new_objects);
        let goroutine_swing = self.rng.range(0, 6);
        self.goroutines = if self.rng.one_in(2) {
            (self.goroutines + goroutine_swing).min(140)
        } else {
            self.goroutines.saturating_sub(goroutine_swing).max(60)
        };
        self.stack_inuse_bytes = (self.goroutines / 8 + 4) * 65_536;
        if self.rng.one_in(20) {
            self.heap_sys_bytes += 1_048_576;
        }
        self.heap_released_bytes = self.rng.range(1, 6) * 262_144;
        self.cpu_seconds = round_centis(self.cpu_seconds + self.rng.uniform(0.05, 0.45));
        self.open_fds = self.rng.range(14, 24);
        self.resident_bytes = self.rng.range(38, 62) * 1_048_576 + self.rng.range(0, 255) * 4_096;
        self.network_receive_bytes += self.rng.range(40_000, 160_000);
        self.network_transmit_bytes += self.rng.range(20_000, 90_000);
    }

    fn refresh_gc_quantiles(&mut self) {
        let minimum = self.rng.uniform(1.5e-5, 4.0e-5);
        let mut value = minimum;
        for quantile in &mut self.gc_pause_quantiles {
            *quantile = round_nanos(value);
            value *= self.rng.uniform(1.1, 2.2);
        }
    }

    /// The number of times this process served metrics successfully before the current
    /// scrape; promhttp counts a request once its response is written.
    pub(crate) fn record_scrape(&mut self) {
        self.promhttp_successes += 1;
    }
}

fn round_millis(value: f64) -> f64 {
    (value * 1_000.0).round() / 1_000.0
}

fn round_centis(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn round_nanos(value: f64) -> f64 {
    (value * 1e9).round() / 1e9
}
