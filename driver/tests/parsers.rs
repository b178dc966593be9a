//! Property tests of every parser that reads untrusted input: volume and
//! snapshot ids, names, page tokens, sizes and kubelet paths. Whatever the
//! bytes, a parser never panics, never accepts something that could name
//! a path outside its place, and what it accepts round-trips.

use std::path::{Component, Path};

use cairn_csi::capacity::parse_quantity;
use cairn_csi::ids::{SnapshotId, VolumeId, VolumeName};
use cairn_csi::page_token;
use cairn_csi::paths::KubeletDir;
use proptest::prelude::*;

/// Strings made mostly of the characters ids and paths are built from, so
/// the generator reaches the parsers' interesting branches.
fn id_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z:#/.~_0-9-]{0,140}",
        "(local|nfs|snap|nfs-snap):[a-zA-Z0-9:#/._~-]{0,120}",
        "nfs:[dra]:[0-9]{1,5}:[a-z0-9.]{1,12}#/[a-z/.]{0,20}#[a-z/.~-]{0,30}",
        any::<String>(),
    ]
}

fn safe_component(c: &str) -> bool {
    !c.is_empty() && c != "." && c != ".." && !c.contains('/') && !c.contains('\0')
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn volume_ids_round_trip_and_name_no_path_outside(raw in id_like()) {
        match VolumeId::parse(&raw) {
            Ok(id) => {
                prop_assert_eq!(id.to_string(), raw.clone());
                match &id {
                    VolumeId::Local(local) => prop_assert!(safe_component(local.key.as_str())),
                    VolumeId::Nfs(nfs) => {
                        for part in nfs.subdir.as_str().split('/') {
                            prop_assert!(safe_component(part), "subdir {:?}", nfs.subdir.as_str());
                        }
                        prop_assert!(nfs.share.as_str().starts_with('/'));
                        prop_assert!(!nfs.share.as_str().split('/').any(|c| c == ".." || c == "."));
                    }
                }
            }
            Err(e) => {
                // Only "missing" (empty) is a bad request; anything else
                // names a volume that does not exist.
                let expected = if raw.is_empty() { tonic::Code::InvalidArgument } else { tonic::Code::NotFound };
                prop_assert_eq!(e.code(), expected);
                prop_assert!(e.to_string().len() < 600, "message quotes too much");
            }
        }
    }

    #[test]
    fn snapshot_ids_round_trip(raw in id_like()) {
        match SnapshotId::parse(&raw) {
            Ok(id) => prop_assert_eq!(id.to_string(), raw),
            Err(e) => prop_assert!(matches!(e.code(), tonic::Code::NotFound | tonic::Code::InvalidArgument)),
        }
    }

    #[test]
    fn names_become_one_safe_component_and_distinct_names_distinct_keys(
        a in "[a-zA-Z0-9._-]{1,128}",
        b in "[a-zA-Z0-9._-]{1,128}",
    ) {
        if let (Ok(na), Ok(nb)) = (VolumeName::parse(&a), VolumeName::parse(&b)) {
            let (ka, kb) = (na.key(), nb.key());
            prop_assert!(safe_component(ka.as_str()));
            prop_assert!(ka.as_str().len() <= 48);
            prop_assert_eq!(a == b, ka == kb);
        }
    }

    #[test]
    fn any_name_is_refused_or_safe(raw in any::<String>()) {
        if let Ok(name) = VolumeName::parse(&raw) {
            prop_assert!(safe_component(name.key().as_str()));
        }
    }

    #[test]
    fn page_tokens_are_issued_or_aborted(raw in any::<String>(), name in "[a-z0-9-]{1,40}") {
        match page_token::parse("volumes", &raw) {
            Ok(None) => prop_assert!(raw.is_empty()),
            Ok(Some(key)) => prop_assert_eq!(page_token::issue("volumes", &key), raw),
            Err(e) => prop_assert_eq!(e.code(), tonic::Code::Aborted),
        }
        // A name is never a token; an issued token is.
        prop_assert!(page_token::parse("volumes", &name).is_err());
        let key = VolumeName::parse(&name).unwrap().key();
        let token = page_token::issue("volumes", &key);
        prop_assert_eq!(page_token::parse("volumes", &token).unwrap(), Some(key));
    }

    #[test]
    fn sizes_parse_exactly_or_not_at_all(
        value in 0u64..u64::MAX,
        suffix in prop_oneof![Just(""), Just("Ki"), Just("Mi"), Just("Gi"), Just("Ti"), Just("k"), Just("M"), Just("G"), Just("T"), Just("x"), Just("Mib")],
        junk in any::<String>(),
    ) {
        let _ = parse_quantity(&junk);
        let multiplier: Option<u64> = match suffix {
            "" => Some(1), "Ki" => Some(1 << 10), "Mi" => Some(1 << 20), "Gi" => Some(1 << 30),
            "Ti" => Some(1 << 40), "k" => Some(1_000), "M" => Some(1_000_000),
            "G" => Some(1_000_000_000), "T" => Some(1_000_000_000_000), _ => None,
        };
        let parsed = parse_quantity(&format!("{value}{suffix}"));
        match multiplier.and_then(|m| value.checked_mul(m)) {
            Some(bytes) => prop_assert_eq!(parsed, Ok(bytes)),
            None => prop_assert!(parsed.is_err()),
        }
    }

    #[test]
    fn kubelet_paths_stay_beneath_the_kubelet_dir(tail in "[a-z./~-]{0,40}(/[a-z./~-]{0,12}){0,6}", raw in any::<String>()) {
        let dir = tempfile::tempdir().unwrap();
        let kubelet = KubeletDir::open(dir.path()).unwrap();
        for candidate in [format!("{}/{tail}", dir.path().display()), raw] {
            if let Ok(path) = kubelet.check(&candidate, "target_path") {
                let lexical = kubelet.lexical(&path);
                let below = lexical.strip_prefix(kubelet.real());
                prop_assert!(below.is_ok(), "{} escapes", lexical.display());
                let below: &Path = below.unwrap();
                prop_assert!(below.components().next().is_some());
                prop_assert!(below.components().all(|c| matches!(c, Component::Normal(_))));
            }
        }
    }
}
