//! Cairn's Kubernetes end-to-end suite (issue 16): installs `deploy/local` on
//! the cluster `KUBECONFIG` names and runs the user stories of the README and
//! `deploy/examples`, each in a namespace of its own. See `e2e/README.md`.

pub mod install;
pub mod kubectl;
pub mod story;
