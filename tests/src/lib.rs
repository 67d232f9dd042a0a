//! The local sandbox: everything `cargo xtask demo`, `cargo xtask sandbox up` and the
//! end-to-end tests need to run the whole tool on one machine with no AWS account and no
//! cluster.
//!
//! - [`aws_emulator`]: the moto AWS emulator behind our CBOR translation layer, one process
//!   per sandbox, on a port the OS picks.
//! - [`kube_api`]: a fake Kubernetes API server that the production `kube::Client` reaches
//!   through a generated kubeconfig.
//! - [`kubectl`]: the real kubectl binary pointed at a fake API server, for tests.
//! - [`fleet`]: simulated aws-node (ipamd) metrics endpoints on 127.0.0.x:61678.
//! - [`environment`]: all of the above started together, with an EKS cluster and its IAM
//!   OIDC provider in the emulator and the fleet's pods and nodes in the API server.
//! - [`png`]: the pixel size of a PNG, for tests of the images the emulator draws.
//! - [`python_tools`]: the project-local virtualenv holding the Python test tools.
//! - [`bench_report`]: what the benchmark driver reports to `cargo xtask bench`, typed on
//!   both sides.

pub mod aws_emulator;
pub mod bench_report;
pub mod environment;
pub mod fleet;
pub mod kube_api;
pub mod kubectl;
pub mod png;
pub mod python_tools;
pub mod registry;
