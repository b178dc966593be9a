//! Refusing parameters by name. StorageClass parameters, VolumeSnapshotClass
//! parameters and inline volume attributes are free-form maps: a key Cairn
//! does not know is a typo or a feature it lacks, and ignoring it would
//! silently give the user something other than what they asked for.

/// The keys that are neither `known` nor metadata under `prefix` (what the
/// sidecars and the kubelet add, e.g. `csi.storage.k8s.io/pvc/name`),
/// sorted.
pub fn unknown<'a>(
    keys: impl IntoIterator<Item = &'a String>,
    known: &[&str],
    prefix: &str,
) -> Vec<&'a str> {
    let mut unknown: Vec<&str> = keys
        .into_iter()
        .map(String::as_str)
        .filter(|k| !k.starts_with(prefix) && !known.contains(k))
        .collect();
    unknown.sort_unstable();
    unknown
}

#[cfg(test)]
mod tests {
    #[test]
    fn metadata_and_known_keys_pass_and_the_rest_is_named_in_order() {
        let keys: Vec<String> = ["zeta", "csi.storage.k8s.io/pvc/name", "server", "alpha"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            super::unknown(&keys, &["server"], "csi.storage.k8s.io/"),
            vec!["alpha", "zeta"]
        );
        assert!(super::unknown(&keys[1..3], &["server"], "csi.storage.k8s.io/").is_empty());
    }
}
