//! Fleets: `plan`, `deploy` and `status` with one `--config` per cluster, against several
//! sandbox clusters in several regions of one AWS emulator, each with its own Kubernetes
//! API server, aws-node pods and kubeconfig.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::world::{World, stderr};

/// Regions the clusters are spread over, all of the `aws` partition.
const REGIONS: [&str; 4] = ["us-west-2", "eu-west-1", "us-east-1", "ap-southeast-2"];

/// Several sandbox clusters sharing the first one's emulator, and a directory with one
/// config file per cluster.
struct Fleet {
    /// The first owns the emulator; the others point at it.
    worlds: Vec<World>,
    configs: tempfile::TempDir,
}

impl Fleet {
    async fn start(clusters: usize) -> Fleet {
        let first = World::start_with(|options| {
            options.cluster = name(0);
            options.region = REGIONS[0].to_owned();
            options.nodes = 2;
        })
        .await;
        let endpoint = first.sandbox.aws_endpoint().to_owned();
        let others = futures::future::join_all((1..clusters).map(|index| {
            let endpoint = endpoint.clone();
            World::start_with(move |options| {
                options.cluster = name(index);
                options.region = REGIONS[index % REGIONS.len()].to_owned();
                options.nodes = 2;
                options.aws_endpoint = Some(endpoint);
            })
        }))
        .await;
        let mut worlds = vec![first];
        worlds.extend(others);
        let configs = tempfile::tempdir().expect("temp dir");
        for world in &worlds {
            write_config(configs.path(), world, "sandbox");
        }
        Fleet { worlds, configs }
    }

    fn dir(&self) -> String {
        self.configs.path().display().to_string()
    }

    /// Runs xtask with the first cluster's environment (its region and kubeconfig are what
    /// the configs must override).
    async fn xtask(&self, args: &[&str]) -> Output {
        self.worlds[0].xtask(args).await
    }

    fn clear_request_logs(&self) {
        self.worlds[0].clear_request_logs();
        for world in &self.worlds[1..] {
            world.sandbox.api().clear_requests();
        }
    }

    fn kubernetes_writes(&self) -> Vec<String> {
        self.worlds
            .iter()
            .flat_map(|world| {
                world
                    .kubernetes_writes()
                    .into_iter()
                    .map(|write| format!("{}: {write}", world.sandbox.cluster()))
            })
            .collect()
    }

    async fn shutdown(self) {
        for world in self.worlds.into_iter().rev() {
            world.sandbox.shutdown().await;
        }
    }
}

fn name(index: usize) -> String {
    format!("fleet-{index:02}")
}

/// `DIR/<cluster>.yaml`: the cluster, its region, and its kubeconfig and context.
fn write_config(dir: &Path, world: &World, context: &str) -> PathBuf {
    let path = dir.join(format!("{}.yaml", world.sandbox.cluster()));
    std::fs::write(
        &path,
        format!(
            "cluster: {}\nregion: {}\nkubeconfig: {}\ncontext: {context}\n",
            world.sandbox.cluster(),
            world.sandbox.region(),
            world.sandbox.kubeconfig_path().display()
        ),
    )
    .expect("the config is written");
    path
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("JSON on stdout; stderr: {}", stderr(output)))
}

/// Every cluster's row of a fleet's JSON summary, by cluster name.
fn rows(summary: &Value) -> Vec<(String, Value)> {
    summary["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .map(|row| {
            (
                row["cluster"].as_str().expect("cluster").to_owned(),
                row.clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_of_ten_is_planned_deployed_once_and_reported_with_versions() {
    let fleet = Fleet::start(10).await;
    let dir = fleet.dir();

    // (a) The first plan: every cluster's plan, prefixed with its name, and the summary.
    let plan = fleet
        .xtask(&[
            "plan",
            "--config",
            &dir,
            "--detailed-exitcode",
            "--parallel",
            "10",
        ])
        .await;
    let text = stdout(&plan);
    assert_eq!(
        plan.status.code(),
        Some(2),
        "changes: {text}\n{}",
        stderr(&plan)
    );
    for world in &fleet.worlds {
        let prefix = format!("[{}/{}] ", world.sandbox.cluster(), world.sandbox.region());
        assert!(
            text.lines()
                .any(|line| line.starts_with(&format!("{prefix}Plan for cluster"))),
            "{prefix} has its plan: {text}"
        );
        assert!(
            text.lines()
                .filter(|line| line.contains(&format!("{}/", world.sandbox.cluster())))
                .all(|line| line.starts_with(&prefix)),
            "no line of {prefix} is mixed with another's: {text}"
        );
    }
    assert!(
        text.contains("Fleet plan: 10 clusters, 0 ok, 10 with changes, 0 failed"),
        "{text}"
    );

    // (b) A deploy of all, then a second one that writes nothing anywhere.
    let deploy = fleet.xtask(&["deploy", "--config", &dir, "--yes"]).await;
    assert_eq!(
        deploy.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&deploy),
        stderr(&deploy)
    );
    fleet.clear_request_logs();
    let again = fleet
        .xtask(&["deploy", "--config", &dir, "--yes", "--output", "json"])
        .await;
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let summary = json(&again);
    assert_eq!(summary["ok"], 10, "{summary}");
    assert_eq!(
        fleet.worlds[0].mutating_aws_calls(),
        Vec::<String>::new(),
        "a no-op fleet deploy calls no mutating AWS API"
    );
    assert_eq!(
        fleet.kubernetes_writes(),
        Vec::<String>::new(),
        "a no-op fleet deploy writes no Kubernetes object"
    );
    let plan = fleet
        .xtask(&["plan", "--config", &dir, "--detailed-exitcode"])
        .await;
    assert_eq!(
        plan.status.code(),
        Some(0),
        "nothing left to change: {}",
        stdout(&plan)
    );

    // (d) Status of all: the live version is the pinned one everywhere.
    let status = fleet
        .xtask(&["status", "--config", &dir, "--output", "json"])
        .await;
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    let summary = json(&status);
    let rows = rows(&summary);
    assert_eq!(rows.len(), 10);
    for (cluster, row) in &rows {
        assert_eq!(row["result"], "ok", "{cluster}: {row}");
        let pinned = row["pinned_version"].as_str().expect("pinned version");
        assert!(pinned.starts_with('v'), "{cluster}: {row}");
        assert_eq!(row["live_version"], pinned, "{cluster}: {row}");
        assert_eq!(row["detail"]["cluster"], cluster.as_str());
    }
    let human = fleet.xtask(&["status", "--config", &dir]).await;
    let text = stdout(&human);
    assert!(
        text.lines()
            .any(|line| line.starts_with("[fleet-02/us-east-1]   live version")),
        "{text}"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_with_a_broken_kube_context_fails_alone() {
    let fleet = Fleet::start(3).await;
    let broken = write_config(fleet.configs.path(), &fleet.worlds[1], "no-such-context");
    let dir = fleet.dir();

    let plan = fleet
        .xtask(&[
            "plan",
            "--config",
            &dir,
            "--detailed-exitcode",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(plan.status.code(), Some(1), "one failed: {}", stderr(&plan));
    let summary = json(&plan);
    assert_eq!(
        (summary["failed"].clone(), summary["changes"].clone()),
        (1.into(), 2.into())
    );
    for (cluster, row) in rows(&summary) {
        if cluster == name(1) {
            assert_eq!(row["result"], "failed", "{row}");
            let error = row["error"].as_str().expect("error");
            assert!(
                error.contains("no-such-context"),
                "the reason is given: {error}"
            );
            assert_eq!(row["config"], broken.display().to_string());
        } else {
            assert_eq!(row["result"], "changes", "{cluster} planned: {row}");
        }
    }

    // The human summary names the failed cluster with its reason; the others still ran.
    let human = fleet.xtask(&["plan", "--config", &dir]).await;
    assert_eq!(human.status.code(), Some(1));
    let text = stdout(&human);
    assert!(
        text.contains("[fleet-00/us-west-2] Plan for cluster"),
        "{text}"
    );
    assert!(
        text.contains("[fleet-02/us-east-1] Plan for cluster"),
        "{text}"
    );
    assert!(
        text.contains("Failed:\n  fleet-01/eu-west-1 (") && text.contains("no-such-context"),
        "{text}"
    );

    // Each cluster's credentials come from its config: a profile that does not exist
    // fails that cluster alone, with the profile named.
    let path = fleet.configs.path().join(format!("{}.yaml", name(2)));
    let text = std::fs::read_to_string(&path).expect("config");
    std::fs::write(&path, format!("{text}profile: no-such-profile\n")).expect("written");
    let plan = fleet
        .xtask(&["plan", "--config", &dir, "--output", "json"])
        .await;
    assert_eq!(plan.status.code(), Some(1));
    let summary = json(&plan);
    let failed: Vec<(String, Value)> = rows(&summary)
        .into_iter()
        .filter(|(_, row)| row["result"] == "failed")
        .collect();
    assert_eq!(failed.len(), 2, "{summary}");
    assert_eq!(failed[1].0, name(2));
    assert!(
        failed[1].1["error"]
            .as_str()
            .is_some_and(|error| error.contains("no-such-profile")),
        "{summary}"
    );

    // Flags that name one cluster cannot apply to a fleet; deploy needs --yes.
    let refused = fleet
        .xtask(&["plan", "--config", &dir, "--cluster", "x"])
        .await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("--cluster names one cluster"),
        "{}",
        stderr(&refused)
    );
    let unasked = fleet.xtask(&["deploy", "--config", &dir]).await;
    assert_eq!(unasked.status.code(), Some(1));
    assert!(stderr(&unasked).contains("--yes"), "{}", stderr(&unasked));
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_upgrades_each_cluster_along_its_own_path() {
    let fleet = Fleet::start(2).await;
    let dir = fleet.dir();
    // The two clusters start two minor versions apart.
    let first = fleet.configs.path().join(format!("{}.yaml", name(0)));
    let text = std::fs::read_to_string(&first).expect("config");
    std::fs::write(&first, format!("{text}version: v1.19.0\n")).expect("written");
    let second = fleet.configs.path().join(format!("{}.yaml", name(1)));
    let text = std::fs::read_to_string(&second).expect("config");
    std::fs::write(&second, format!("{text}version: v1.20.5\n")).expect("written");
    let deploy = fleet.xtask(&["deploy", "--config", &dir, "--yes"]).await;
    assert_eq!(deploy.status.code(), Some(0), "{}", stderr(&deploy));
    for path in [&first, &second] {
        let text = std::fs::read_to_string(path).expect("config");
        let unpinned: String = text
            .lines()
            .filter(|line| !line.starts_with("version:"))
            .map(|line| format!("{line}\n"))
            .collect();
        std::fs::write(path, unpinned).expect("written");
    }

    let refused = fleet
        .xtask(&["upgrade", "--config", &dir, "--to", "v1.21.1"])
        .await;
    assert_eq!(
        refused.status.code(),
        Some(1),
        "a fleet upgrade needs --yes"
    );
    let upgrade = fleet
        .xtask(&[
            "upgrade", "--config", &dir, "--to", "v1.21.1", "--yes", "--output", "json",
        ])
        .await;
    assert_eq!(upgrade.status.code(), Some(0), "{}", stderr(&upgrade));
    let summary = json(&upgrade);
    let rows = rows(&summary);
    let paths: Vec<(String, Value, Value)> = rows
        .iter()
        .map(|(cluster, row)| {
            assert_eq!(row["live_version"], "v1.21.1", "{row}");
            (
                cluster.clone(),
                row["detail"]["from"].clone(),
                row["detail"]["path"].clone(),
            )
        })
        .collect();
    assert_eq!(
        paths,
        [
            (
                name(0),
                "v1.19.0".into(),
                serde_json::json!(["v1.20.5", "v1.21.1"])
            ),
            (name(1), "v1.20.5".into(), serde_json::json!(["v1.21.1"])),
        ]
    );
    fleet.shutdown().await;
}
