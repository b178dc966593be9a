//! What a conformance run is pointed at and which cases it runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use regex::Regex;

/// Volume size used when none is given: small enough for any test backend.
pub const DEFAULT_VOLUME_SIZE: u64 = 10 * 1024 * 1024;

/// Everything a run needs. Build it with [`Config::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct Config {
    /// Endpoint serving Identity and Node (`unix:///path/csi.sock` or a path).
    pub endpoint: String,
    /// Endpoint serving Controller when it is not `endpoint`.
    pub controller_endpoint: Option<String>,
    /// Base for staging dirs; each case uses `<base>/<case>/globalmount`.
    /// `None`: a fresh temp dir. Drivers that confine paths (Cairn's
    /// `--kubelet-dir`) need a base inside the allowed tree.
    pub staging_base: Option<PathBuf>,
    /// Base for publish targets; each case passes `<base>/<case>/mount`.
    pub target_base: Option<PathBuf>,
    /// StorageClass-style parameters passed to CreateVolume and GetCapacity.
    pub params: BTreeMap<String, String>,
    /// VolumeSnapshotClass-style parameters passed to CreateSnapshot (kept
    /// apart from `params`: a StorageClass's keys mean nothing to a
    /// snapshot, and a strict driver refuses them).
    pub snapshot_params: BTreeMap<String, String>,
    /// `required_bytes` for the volumes the suite creates.
    pub volume_size: u64,
    /// Which cases run.
    pub filter: Filter,
    /// Print one line per case to stderr as it finishes.
    pub progress: bool,
}

impl Config {
    /// A config for `endpoint` with every other field at its default.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            controller_endpoint: None,
            staging_base: None,
            target_base: None,
            params: BTreeMap::new(),
            snapshot_params: BTreeMap::new(),
            volume_size: DEFAULT_VOLUME_SIZE,
            filter: Filter::default(),
            progress: false,
        }
    }
}

/// Case selection by name: a case runs when it matches `run` (if set) and
/// does not match `skip` (if set).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub run: Option<Regex>,
    pub skip: Option<Regex>,
}

impl Filter {
    /// Compiles the two optional patterns.
    pub fn new(run: Option<&str>, skip: Option<&str>) -> Result<Self, regex::Error> {
        Ok(Self {
            run: run.map(Regex::new).transpose()?,
            skip: skip.map(Regex::new).transpose()?,
        })
    }

    pub fn selects(&self, name: &str) -> bool {
        let wanted = self.run.as_ref().is_none_or(|re| re.is_match(name));
        let unwanted = self.skip.as_ref().is_some_and(|re| re.is_match(name));
        wanted && !unwanted
    }
}

/// Why a command-line value could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValueError {
    #[error("size {0:?}: expected bytes with an optional suffix (k, M, G, T, Ki, Mi, Gi, Ti)")]
    Size(String),
    #[error("size {0:?} does not fit in 63 bits")]
    SizeOverflow(String),
    #[error("parameter {0:?}: expected key=value")]
    Param(String),
}

/// Parses `10Mi`, `1Gi`, `500M`, `4096` into bytes (Kubernetes quantity
/// suffixes, binary and decimal). Sizes travel as int64 on the wire, so the
/// result must fit in `i64`.
pub fn parse_size(text: &str) -> Result<u64, ValueError> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, suffix) = trimmed.split_at(split);
    if digits.is_empty() {
        return Err(ValueError::Size(text.to_string()));
    }
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return Err(ValueError::Size(text.to_string())),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| ValueError::SizeOverflow(text.to_string()))?;
    number
        .checked_mul(multiplier)
        .filter(|bytes| i64::try_from(*bytes).is_ok())
        .ok_or_else(|| ValueError::SizeOverflow(text.to_string()))
}

/// Parses one `key=value` parameter; the value may itself contain `=`.
pub fn parse_param(text: &str) -> Result<(String, String), ValueError> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(ValueError::Param(text.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_binary_and_decimal_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("10Mi"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("1Gi"), Ok(1 << 30));
        assert_eq!(parse_size("2k"), Ok(2000));
        assert_eq!(parse_size("3G"), Ok(3_000_000_000));
        assert_eq!(parse_size(" 1Ti "), Ok(1 << 40));
    }

    #[test]
    fn sizes_refuse_garbage_and_overflow() {
        assert!(matches!(parse_size(""), Err(ValueError::Size(_))));
        assert!(matches!(parse_size("Mi"), Err(ValueError::Size(_))));
        assert!(matches!(parse_size("10MB"), Err(ValueError::Size(_))));
        assert!(matches!(parse_size("-1"), Err(ValueError::Size(_))));
        assert!(matches!(
            parse_size("9999999999Ti"),
            Err(ValueError::SizeOverflow(_))
        ));
        assert!(matches!(
            parse_size("99999999999999999999999"),
            Err(ValueError::SizeOverflow(_))
        ));
    }

    #[test]
    fn params_split_on_first_equals() {
        assert_eq!(
            parse_param("a=b=c"),
            Ok(("a".to_string(), "b=c".to_string()))
        );
        assert_eq!(parse_param("k="), Ok(("k".to_string(), String::new())));
        assert!(parse_param("=v").is_err());
        assert!(parse_param("novalue").is_err());
    }

    #[test]
    fn filter_run_and_skip() {
        let all = Filter::default();
        assert!(all.selects("Identity/probe"));

        let only_node = Filter::new(Some("^Node"), None).unwrap();
        assert!(only_node.selects("NodeStageVolume/ok"));
        assert!(!only_node.selects("CreateVolume/ok"));

        let both = Filter::new(Some("Volume"), Some("Stage")).unwrap();
        assert!(both.selects("CreateVolume/ok"));
        assert!(!both.selects("NodeStageVolume/ok"));
        assert!(!both.selects("Identity/probe"));

        assert!(Filter::new(Some("("), None).is_err());
    }
}
