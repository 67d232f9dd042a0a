//! The composed sandbox: EKS cluster and OIDC provider in the emulator, the fleet's pods and
//! nodes in the API server, and the pods proxy reaching a simulated node.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use sandbox::environment::{POD_IDENTITY_AGENT_ADDON, Sandbox, SandboxOptions};
use sandbox::python_tools::{PythonTools, workspace_root};

fn tools() -> PythonTools {
    PythonTools::find(&workspace_root()).unwrap_or_else(|error| panic!("{error}"))
}

async fn kube_client(sandbox: &Sandbox) -> Client {
    let kubeconfig = Kubeconfig::read_from(sandbox.kubeconfig_path()).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kube-rs accepts the kubeconfig");
    Client::try_from(config).expect("a kube client")
}

#[tokio::test]
async fn a_sandbox_has_a_cluster_an_oidc_provider_and_aws_node_pods_behind_the_proxy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SandboxOptions {
        nodes: 4,
        cluster: "laptop".to_owned(),
        region: "eu-west-1".to_owned(),
        ..SandboxOptions::new(dir.path().join("sandbox"))
    };
    let sandbox = Sandbox::start(&tools(), options)
        .await
        .expect("the sandbox starts");

    // AWS: the cluster and its OIDC provider, read back through the real SDK.
    let config = sandbox.sdk_config();
    let cluster = aws_sdk_eks::Client::new(&config)
        .describe_cluster()
        .name("laptop")
        .send()
        .await
        .expect("the cluster exists")
        .cluster
        .expect("a cluster");
    let issuer = cluster
        .identity
        .and_then(|i| i.oidc)
        .and_then(|o| o.issuer)
        .expect("issuer");
    assert_eq!(issuer, sandbox.oidc_issuer());
    // EKS reports the fake API server as the cluster's endpoint, which is also the
    // kubeconfig's server, as a preflight check of the kube context expects.
    assert_eq!(
        cluster.endpoint.as_deref(),
        Some(sandbox.api().url().as_str())
    );
    let kubeconfig = Kubeconfig::read_from(sandbox.kubeconfig_path()).expect("kubeconfig parses");
    let server = kubeconfig
        .clusters
        .first()
        .and_then(|named| named.cluster.as_ref())
        .and_then(|cluster| cluster.server.clone());
    assert_eq!(server, cluster.endpoint);
    assert!(sandbox.cluster_arn().ends_with(":cluster/laptop"));
    let provider_arn = format!(
        "arn:aws:iam::{}:oidc-provider/{}",
        sandbox.account(),
        issuer.trim_start_matches("https://")
    );
    let provider = aws_sdk_iam::Client::new(&config)
        .get_open_id_connect_provider()
        .open_id_connect_provider_arn(&provider_arn)
        .send()
        .await
        .expect("the OIDC provider exists");
    assert_eq!(provider.client_id_list(), ["sts.amazonaws.com"]);

    // Kubernetes: the aws-node pods and their nodes, through the kubeconfig it wrote.
    let client = kube_client(&sandbox).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let aws_node = pods
        .list(&ListParams::default().labels("k8s-app=aws-node"))
        .await
        .expect("pods list");
    assert_eq!(aws_node.items.len(), 4);
    for pod in &aws_node.items {
        let status = pod.status.as_ref().expect("status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert!(
            status
                .pod_ip
                .as_deref()
                .is_some_and(|ip| ip.starts_with("127."))
        );
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let zones: Vec<String> = nodes
        .list(&ListParams::default())
        .await
        .expect("nodes list")
        .items
        .iter()
        .filter_map(|node| {
            node.metadata
                .labels
                .as_ref()?
                .get("topology.kubernetes.io/zone")
                .cloned()
        })
        .collect();
    assert_eq!(zones.len(), 4);
    assert!(
        zones.iter().all(|zone| zone.starts_with("eu-west-1")),
        "{zones:?}"
    );

    // The pods proxy reaches the simulated ipamd endpoint, as the upstream helper scrapes.
    let pod = sandbox.fleet().node(0).pod_name();
    let request = http::Request::get(format!(
        "/api/v1/namespaces/kube-system/pods/{pod}:61678/proxy/metrics"
    ))
    .body(Vec::new())
    .expect("request");
    let body = tokio::time::timeout(Duration::from_secs(20), client.request_text(request))
        .await
        .expect("the proxy answers promptly")
        .expect("the proxy reaches the node");
    assert!(
        body.contains("# TYPE awscni_assigned_ip_addresses gauge"),
        "{body:.200}"
    );

    // The files a user sources.
    let env = std::fs::read_to_string(sandbox.env_path()).expect("env written");
    assert!(env.contains(&format!(
        "export AWS_ENDPOINT_URL='{}'",
        sandbox.aws_endpoint()
    )));
    assert!(env.contains("export AWS_REGION='eu-west-1'"));
    assert!(env.contains(&format!(
        "export KUBECONFIG='{}'",
        sandbox.kubeconfig_path().display()
    )));

    // Replacing a node's pod shows in the API server under the new name only.
    let old_name = sandbox.fleet().node(1).pod_name();
    sandbox.replace_node(1).expect("replaced");
    let names: Vec<String> = pods
        .list(&ListParams::default().labels("k8s-app=aws-node"))
        .await
        .expect("pods list")
        .items
        .into_iter()
        .filter_map(|pod| pod.metadata.name)
        .collect();
    assert_eq!(names.len(), 4);
    assert!(!names.contains(&old_name));
    assert!(names.contains(&sandbox.fleet().node(1).pod_name()));

    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_sandbox_on_an_existing_endpoint_reuses_the_cluster_and_provider() {
    let first_dir = tempfile::tempdir().expect("temp dir");
    let first = Sandbox::start(&tools(), SandboxOptions::new(first_dir.path()))
        .await
        .expect("the first sandbox starts");
    let second_dir = tempfile::tempdir().expect("temp dir");
    let second = Sandbox::start(
        &tools(),
        SandboxOptions {
            aws_endpoint: Some(first.aws_endpoint().to_owned()),
            nodes: 1,
            ..SandboxOptions::new(second_dir.path())
        },
    )
    .await
    .expect("the second sandbox starts on the same endpoint");
    assert!(second.emulator().is_none(), "no second emulator is started");
    // The cluster now points at the second sandbox's API server: the one whose
    // kubeconfig was written last.
    let endpoint = aws_sdk_eks::Client::new(&second.sdk_config())
        .describe_cluster()
        .name(second.cluster())
        .send()
        .await
        .expect("the cluster exists")
        .cluster
        .and_then(|cluster| cluster.endpoint);
    assert_eq!(endpoint, Some(second.api().url()));
    assert_eq!(second.oidc_issuer(), first.oidc_issuer());
    assert_eq!(second.cluster_arn(), first.cluster_arn());
    second.shutdown().await;
    first.shutdown().await;
}

/// The status of the `eks-pod-identity-agent` add-on, or `None` when it is not installed.
async fn agent_status(sandbox: &Sandbox) -> Option<aws_sdk_eks::types::AddonStatus> {
    let described = aws_sdk_eks::Client::new(&sandbox.sdk_config())
        .describe_addon()
        .cluster_name(sandbox.cluster())
        .addon_name(POD_IDENTITY_AGENT_ADDON)
        .send()
        .await;
    match described {
        Ok(output) => output.addon.and_then(|addon| addon.status),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|error| error.is_resource_not_found_exception()) =>
        {
            None
        }
        Err(error) => panic!("DescribeAddon failed: {error:?}"),
    }
}

#[tokio::test]
async fn the_pod_identity_agent_is_installed_on_request_only() {
    let plain_dir = tempfile::tempdir().expect("temp dir");
    let plain = Sandbox::start(
        &tools(),
        SandboxOptions {
            nodes: 1,
            ..SandboxOptions::new(plain_dir.path())
        },
    )
    .await
    .expect("the sandbox starts");
    assert_eq!(agent_status(&plain).await, None, "not installed by default");
    plain
        .install_pod_identity_agent()
        .await
        .expect("the add-on installs");
    assert_eq!(
        agent_status(&plain).await,
        Some(aws_sdk_eks::types::AddonStatus::Active)
    );
    plain
        .install_pod_identity_agent()
        .await
        .expect("installing it again is fine");
    plain.shutdown().await;

    let agent_dir = tempfile::tempdir().expect("temp dir");
    let with_agent = Sandbox::start(
        &tools(),
        SandboxOptions {
            nodes: 1,
            pod_identity_agent: true,
            ..SandboxOptions::new(agent_dir.path())
        },
    )
    .await
    .expect("the sandbox starts");
    assert_eq!(
        agent_status(&with_agent).await,
        Some(aws_sdk_eks::types::AddonStatus::Active)
    );
    with_agent.shutdown().await;
}
