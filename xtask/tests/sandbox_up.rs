//! `cargo xtask sandbox up` as a user runs it: it comes up, writes its files, serves, and on
//! SIGTERM stops every process it started.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(120);

fn endpoint_address(env: &str) -> SocketAddr {
    let line = env
        .lines()
        .find(|line| line.starts_with("export AWS_ENDPOINT_URL="))
        .expect("the env file names the AWS endpoint");
    let url = line.split('\'').nth(1).expect("quoted value");
    url.trim_start_matches("http://")
        .parse()
        .expect("host:port")
}

#[test]
fn sandbox_up_serves_until_sigterm_and_then_stops_everything_it_started() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sandbox_dir = dir.path().join("sandbox");
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "sandbox",
            "up",
            "--nodes",
            "2",
            "--cluster",
            "laptop",
            "--dir",
        ])
        .arg(&sandbox_dir)
        .env_remove("AWS_ENDPOINT_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("xtask starts");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while !printed
        .iter()
        .any(|line: &String| line.contains("Press Ctrl-C"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => printed.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("the sandbox did not come up; it printed {printed:?}");
            }
        }
    }
    let text = printed.join("\n");
    assert!(text.contains("EKS cluster laptop in us-west-2"), "{text}");
    assert!(text.contains("2 aws-node pods"), "{text}");
    assert!(sandbox_dir.join("kubeconfig").is_file());
    let env = std::fs::read_to_string(sandbox_dir.join("env")).expect("env written");
    let emulator = endpoint_address(&env);
    assert!(TcpStream::connect(emulator).is_ok(), "the emulator serves");
    // The registry behind the emulated ECR (cargo xtask test installs docker-registry).
    let registry = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("OCI registry"))
        .and_then(|rest| rest.trim().strip_prefix("http://"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no OCI registry line: {text}"))
        .to_owned();
    assert!(TcpStream::connect(&registry).is_ok(), "the registry serves");

    // What a new user tries first, with the kubeconfig `.sandbox/env` points at: a
    // server-side apply with kubectl's default validation (it needs the OpenAPI documents)
    // and a look at the aws-node pods.
    let kubectl = |args: &[&str]| {
        let output = Command::new("kubectl")
            .args(args)
            .arg("--cache-dir")
            .arg(dir.path().join("kube-cache"))
            .env("KUBECONFIG", sandbox_dir.join("kubeconfig"))
            .output()
            .expect("kubectl runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    };
    let manifest = dir.path().join("sa.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: mine\n  namespace: default\n",
    )
    .expect("written");
    let (applied, said) = kubectl(&["apply", "--server-side", "-f", &manifest.to_string_lossy()]);
    assert!(applied, "{said}");
    assert_eq!(said, "serviceaccount/mine serverside-applied\n");
    let (listed, said) = kubectl(&[
        "get",
        "pods",
        "-n",
        "kube-system",
        "-l",
        "k8s-app=aws-node",
        "-o",
        "wide",
    ]);
    assert!(listed, "{said}");
    assert!(said.starts_with("NAME "), "{said}");
    assert_eq!(
        said.lines()
            .filter(|line| line.contains(" Running "))
            .count(),
        2,
        "{said}"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + PATIENCE;
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "xtask did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit}");
    assert!(
        TcpStream::connect(emulator).is_err(),
        "the emulator was stopped with it"
    );
    assert!(
        TcpStream::connect(&registry).is_err(),
        "the registry was stopped with it"
    );
}
