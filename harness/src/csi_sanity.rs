//! The Kubernetes community's conformance suite, `csi-sanity` (built from
//! kubernetes-csi/csi-test), as the project's tests run it: found beside the
//! checkout in `shared/tools/` (or at `CSI_SANITY`), run with a JSON report,
//! and read back as the exact sets of passed, failed and skipped specs, so a
//! test can pin the skip set instead of only counting.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What csi-sanity skips against Cairn, and why: capabilities Cairn does not
/// advertise (no ControllerPublish: local and NFS volumes need no attach;
/// no ModifyVolume; no group snapshots). Anything else skipped is a
/// regression.
pub const SKIPPED_BY_DESIGN: &[&str] = &[
    "Controller Service [Controller Server] ControllerPublishVolume should fail when no node id is provided",
    "Controller Service [Controller Server] ControllerPublishVolume should fail when no volume capability is provided",
    "Controller Service [Controller Server] ControllerPublishVolume should fail when no volume id is provided",
    "Controller Service [Controller Server] ControllerPublishVolume should fail when publishing more volumes than the node max attach limit",
    "Controller Service [Controller Server] ControllerPublishVolume should fail when the node does not exist",
    "Controller Service [Controller Server] ControllerPublishVolume should fail when the volume does not exist",
    "Controller Service [Controller Server] ControllerPublishVolume should fail when the volume is already published but is incompatible",
    "Controller Service [Controller Server] ControllerUnpublishVolume should fail when no volume id is provided",
    "Controller Service [Controller Server] CreateVolume should create volume with a volume attribute class",
    "Controller Service [Controller Server] CreateVolume should not create volume with an invalid volume attribute class",
    "Controller Service [Controller Server] volume lifecycle should be idempotent",
    "Controller Service [Controller Server] volume lifecycle should work",
    "GroupController Service [GroupController Server] GroupControllerGetCapabilities should return appropriate capabilities",
    "GroupController Service [GroupController VolumeGroupSnapshots] CreateVolumeGroupSnapshot should fail when no name is provided",
    "GroupController Service [GroupController VolumeGroupSnapshots] DeleteVolumeGroupSnapshot should fail when no volume id is provided",
    "GroupController Service [GroupController VolumeGroupSnapshots] DeleteVolumeGroupSnapshot should succeed when an invalid volume id is used",
    "GroupController Service [GroupController VolumeGroupSnapshots] GetVolumeGroupSnapshot should fail when an invalid volume id is used",
    "GroupController Service [GroupController VolumeGroupSnapshots] GetVolumeGroupSnapshot should fail when no volume id is provided",
    "ModifyVolume [Controller Server] should fail if no volume id is given",
    "ModifyVolume [Controller Server] should fail if specified mutable parameters are not supported by the volume",
    "ModifyVolume [Controller Server] should fail if volume does not exist",
    "ModifyVolume [Controller Server] should fail to modify a volume created with a volume attribute class if new mutable parameters are not supported by volume",
    "ModifyVolume [Controller Server] should modify a volume created with a volume attribute class",
    "ModifyVolume [Controller Server] should modify a volume created without a volume attribute class",
];

/// Where `csi-sanity` is: `CSI_SANITY`, else `shared/tools/csi-sanity`
/// beside the workspace (where CI and every developer machine have it).
pub fn find(workspace: &Path) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CSI_SANITY") {
        return Some(PathBuf::from(path));
    }
    let beside = workspace.parent()?.join("shared/tools/csi-sanity");
    beside.is_file().then_some(beside)
}

/// `Ok(path)` when `csi-sanity` can run here, else why not (for `require!`).
pub fn require(workspace: &Path) -> Result<PathBuf, String> {
    find(workspace).ok_or_else(|| {
        format!(
            "csi-sanity not found (set CSI_SANITY or put it at {}/../shared/tools/csi-sanity)",
            workspace.display()
        )
    })
}

/// What one run reported, spec by spec (full text: containers and leaf).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub passed: BTreeSet<String>,
    pub failed: BTreeSet<String>,
    pub skipped: BTreeSet<String>,
    pub pending: BTreeSet<String>,
}

impl Report {
    /// Reads a ginkgo `--ginkgo.json-report` file.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let suites: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not a ginkgo JSON report: {e}"))?;
        let suites = suites.as_array().ok_or("report is not a list of suites")?;
        let mut report = Report::default();
        for suite in suites {
            let specs = suite["SpecReports"].as_array().cloned().unwrap_or_default();
            for spec in specs {
                // Suite-level setup nodes are not specs.
                if spec["LeafNodeType"] != "It" {
                    continue;
                }
                let mut name: Vec<String> = spec["ContainerHierarchyTexts"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|t| t.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                name.push(spec["LeafNodeText"].as_str().unwrap_or("?").to_string());
                let name = name.join(" ");
                let set = match spec["State"].as_str().unwrap_or("") {
                    "passed" => &mut report.passed,
                    "skipped" => &mut report.skipped,
                    "pending" => &mut report.pending,
                    // failed, panicked, interrupted, aborted, timedout
                    _ => &mut report.failed,
                };
                set.insert(name);
            }
        }
        Ok(report)
    }

    /// The closing line, as csi-sanity prints it.
    pub fn summary(&self) -> String {
        format!(
            "{} Passed | {} Failed | {} Pending | {} Skipped",
            self.passed.len(),
            self.failed.len(),
            self.pending.len(),
            self.skipped.len()
        )
    }
}

/// Appends `label: <closing line>` to the file `CAIRN_CSI_SANITY_SUMMARY`
/// names, when set: CI prints every run's summary from it at the end.
pub fn record_summary(label: &str, report: &Report) {
    use std::io::Write as _;
    let Some(path) = std::env::var_os("CAIRN_CSI_SANITY_SUMMARY") else {
        return;
    };
    let verdict = if report.failed.is_empty() {
        "SUCCESS!"
    } else {
        "FAIL!"
    };
    let line = format!("{label}: {verdict} -- {}\n", report.summary());
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!("cannot record the csi-sanity summary in {path:?}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_states_and_ignores_suite_nodes() {
        let json = r#"[{"SpecReports":[
            {"LeafNodeType":"It","ContainerHierarchyTexts":["Node Service","NodePublishVolume"],"LeafNodeText":"should work","State":"passed"},
            {"LeafNodeType":"It","ContainerHierarchyTexts":["ModifyVolume"],"LeafNodeText":"should modify","State":"skipped"},
            {"LeafNodeType":"It","ContainerHierarchyTexts":["X"],"LeafNodeText":"breaks","State":"panicked"},
            {"LeafNodeType":"SynchronizedBeforeSuite","State":"passed"}
        ]}]"#;
        let report = Report::from_json(json).unwrap();
        assert_eq!(
            report.passed.iter().collect::<Vec<_>>(),
            ["Node Service NodePublishVolume should work"]
        );
        assert_eq!(
            report.skipped.iter().collect::<Vec<_>>(),
            ["ModifyVolume should modify"]
        );
        assert_eq!(report.failed.iter().collect::<Vec<_>>(), ["X breaks"]);
        assert_eq!(
            report.summary(),
            "1 Passed | 1 Failed | 0 Pending | 1 Skipped"
        );
        assert!(Report::from_json("{}").is_err());
    }
}
