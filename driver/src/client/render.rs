//! Turning CSI responses into text for people or JSON for scripts.

use cairn_proto::v1::*;
use serde_json::{json, Value};

pub fn capacity_text(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn topology(t: &[Topology]) -> Value {
    Value::Array(
        t.iter()
            .map(|t| {
                json!(t
                    .segments
                    .iter()
                    .collect::<std::collections::BTreeMap<_, _>>())
            })
            .collect(),
    )
}

pub fn volume(v: &Volume) -> Value {
    json!({
        "volume_id": v.volume_id,
        "capacity_bytes": v.capacity_bytes,
        "volume_context": v.volume_context,
        "accessible_topology": topology(&v.accessible_topology),
        "content_source": super::snapshot::source_json(v.content_source.as_ref()),
    })
}

pub fn volume_line(v: &Volume, condition: Option<&VolumeCondition>) -> String {
    let topology = v
        .accessible_topology
        .iter()
        .flat_map(|t| t.segments.iter().map(|(k, v)| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(",");
    let health = match condition {
        Some(c) if c.abnormal => format!("ABNORMAL: {}", c.message),
        Some(_) => "healthy".into(),
        None => "-".into(),
    };
    format!(
        "{:<60} {:>10}  {:<40} {}",
        v.volume_id,
        capacity_text(v.capacity_bytes),
        topology,
        health
    )
}

pub fn condition(c: Option<&VolumeCondition>) -> Value {
    c.map_or(
        Value::Null,
        |c| json!({"abnormal": c.abnormal, "message": c.message}),
    )
}

pub fn usage(u: &VolumeUsage) -> Value {
    let unit = volume_usage::Unit::try_from(u.unit)
        .map(|u| u.as_str_name())
        .unwrap_or("UNKNOWN");
    json!({"unit": unit, "total": u.total, "used": u.used, "available": u.available})
}

pub fn plugin_capability_names(caps: &[PluginCapability]) -> Vec<String> {
    caps.iter()
        .filter_map(|c| match &c.r#type {
            Some(plugin_capability::Type::Service(s)) => Some(
                plugin_capability::service::Type::try_from(s.r#type)
                    .map(|t| t.as_str_name().to_string())
                    .unwrap_or_else(|_| format!("SERVICE_{}", s.r#type)),
            ),
            Some(plugin_capability::Type::VolumeExpansion(e)) => Some(format!(
                "VOLUME_EXPANSION_{}",
                plugin_capability::volume_expansion::Type::try_from(e.r#type)
                    .map(|t| t.as_str_name())
                    .unwrap_or("UNKNOWN")
            )),
            None => None,
        })
        .collect()
}

/// An RPC capability's name as the spec spells it, or its number when this
/// client does not know it.
fn rpc_name<T: TryFrom<i32>>(raw: i32, name: fn(&T) -> &'static str) -> String {
    T::try_from(raw).map_or_else(|_| format!("RPC_{raw}"), |t| name(&t).to_string())
}

pub fn controller_capability_names(caps: &[ControllerServiceCapability]) -> Vec<String> {
    use controller_service_capability::{rpc, Type};
    caps.iter()
        .filter_map(|c| match c.r#type.as_ref()? {
            Type::Rpc(r) => Some(rpc_name(r.r#type, rpc::Type::as_str_name)),
        })
        .collect()
}

pub fn node_capability_names(caps: &[NodeServiceCapability]) -> Vec<String> {
    use node_service_capability::{rpc, Type};
    caps.iter()
        .filter_map(|c| match c.r#type.as_ref()? {
            Type::Rpc(r) => Some(rpc_name(r.r#type, rpc::Type::as_str_name)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn capacity_is_readable() {
        assert_eq!(super::capacity_text(512), "512 B");
        assert_eq!(super::capacity_text(1 << 30), "1.0 GiB");
        assert_eq!(super::capacity_text(1536 << 20), "1.5 GiB");
    }
}
