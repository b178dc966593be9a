//! Prometheus metrics: per-RPC counts by gRPC code and latency histograms,
//! volumes by backend, mounts held, the largest local volume this node
//! would take, build info.
//!
//! RPC metrics are recorded as calls finish; volume and mount counts are
//! read when scraped, so no RPC pays for them.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub method: &'static str,
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MountLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

pub struct Metrics {
    pub requests: Family<RpcLabels, Counter>,
    pub durations: Family<MethodLabels, Histogram>,
    pub volumes: Family<BackendLabels, Gauge>,
    pub mounts: Family<MountLabels, Gauge>,
    /// GetCapacity's `maximum_volume_size` for local volumes: 0 when this
    /// node refuses every new one (an unenforcing root under
    /// `--unenforced-capacity=refuse`), which an alert should name.
    pub local_maximum_volume_bytes: Gauge,
    build: Family<BuildLabels, Gauge>,
}

fn latency_buckets() -> Histogram {
    // 100 µs to ~6.5 s: bind mounts take well under a millisecond, a slow
    // disk or NFS server seconds.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 3.0, 11,
    ))
}

impl Metrics {
    fn new() -> Self {
        let metrics = Self {
            requests: Family::default(),
            durations: Family::new_with_constructor(latency_buckets),
            volumes: Family::default(),
            mounts: Family::default(),
            local_maximum_volume_bytes: Gauge::default(),
            build: Family::default(),
        };
        metrics
            .build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        metrics
    }

    /// Records one finished RPC.
    pub fn observe_rpc(&self, method: &'static str, code: tonic::Code, seconds: f64) {
        self.requests
            .get_or_create(&RpcLabels {
                method,
                code: crate::rpc::code_name(code),
            })
            .inc();
        self.durations
            .get_or_create(&MethodLabels { method })
            .observe(seconds);
    }

    /// Renders the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::with_prefix("cairn");
        registry.register(
            "rpc_requests",
            "CSI calls served, by method and gRPC code",
            self.requests.clone(),
        );
        registry.register(
            "rpc_duration_seconds",
            "Time to serve a CSI call, by method",
            self.durations.clone(),
        );
        registry.register(
            "volumes",
            "Volumes on this node, by backend",
            self.volumes.clone(),
        );
        registry.register(
            "mounts",
            "Volume mounts held on this node (staging and publish)",
            self.mounts.clone(),
        );
        registry.register(
            "local_maximum_volume_bytes",
            "Largest local volume this node would create now (0: it refuses every new one)",
            self.local_maximum_volume_bytes.clone(),
        );
        registry.register(
            "build_info",
            "The running cairn-csi version",
            self.build.clone(),
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_prometheus_names() {
        let m = Metrics::new();
        m.observe_rpc("CreateVolume", tonic::Code::Ok, 0.002);
        m.observe_rpc("CreateVolume", tonic::Code::AlreadyExists, 0.001);
        let text = m.encode().unwrap();
        assert!(
            text.contains(r#"cairn_rpc_requests_total{method="CreateVolume",code="OK"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"code="AlreadyExists""#));
        assert!(text.contains("cairn_rpc_duration_seconds_count{method=\"CreateVolume\"} 2"));
        assert!(text.contains("cairn_build_info{version="));
    }
}
