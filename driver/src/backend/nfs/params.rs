//! StorageClass parameters and mount options of NFS volumes, and the
//! `subDir` template.

use std::collections::BTreeMap;

use super::id::{NfsServer, OnDelete, SharePath, SubDir};
use crate::error::{Error, Result};
use crate::ids::VolumeName;

pub const SERVER: &str = "server";
const SHARE: &str = "share";
const SUB_DIR: &str = "subDir";
const ON_DELETE: &str = "onDelete";
const MOUNT_PERMISSIONS: &str = "mountPermissions";
const KNOWN: &[&str] = &[SERVER, SHARE, SUB_DIR, ON_DELETE, MOUNT_PERMISSIONS];
/// Keys external-provisioner adds with `--extra-create-metadata`.
const PROVISIONER_PREFIX: &str = "csi.storage.k8s.io/";
const PVC_NAME: &str = "csi.storage.k8s.io/pvc/name";
const PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
const PV_NAME: &str = "csi.storage.k8s.io/pv/name";

/// The NFS port when the mount options name none.
pub const DEFAULT_PORT: u16 = 2049;
/// Mode of a new volume directory when `mountPermissions` is not given:
/// pods run as any user.
const DEFAULT_MODE: u32 = 0o777;

/// An NFS StorageClass, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsClass {
    pub server: NfsServer,
    pub share: SharePath,
    pub sub_dir_template: Option<String>,
    pub on_delete: OnDelete,
    pub mode: u32,
}

/// Refuses unknown keys by name, so a typo does not silently change behaviour.
pub fn check_known(parameters: &BTreeMap<String, String>) -> Result<()> {
    let unknown = crate::parameters::unknown(parameters.keys(), KNOWN, PROVISIONER_PREFIX);
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "unknown parameters for an NFS volume: {} (known: {})",
        unknown.join(", "),
        KNOWN.join(", ")
    )))
}

impl NfsClass {
    pub fn parse(parameters: &BTreeMap<String, String>) -> Result<Self> {
        check_known(parameters)?;
        let required = |key: &str| {
            parameters.get(key).ok_or_else(|| {
                Error::InvalidArgument(format!("parameter {key} is required for NFS volumes"))
            })
        };
        let mode = match parameters.get(MOUNT_PERMISSIONS) {
            None => DEFAULT_MODE,
            Some(text) => u32::from_str_radix(text, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "mountPermissions {text:?} must be an octal mode such as 0777"
                    ))
                })?,
        };
        Ok(Self {
            server: NfsServer::parse(required(SERVER)?)?,
            share: SharePath::parse(required(SHARE)?)?,
            sub_dir_template: parameters.get(SUB_DIR).cloned(),
            on_delete: parameters
                .get(ON_DELETE)
                .map_or(Ok(OnDelete::Delete), |v| OnDelete::parse(v))?,
            mode,
        })
    }

    /// The volume's directory: the template with `${pvc.metadata.name}`,
    /// `${pvc.metadata.namespace}` and `${pv.metadata.name}` filled in from
    /// the provisioner's metadata, or the volume name (the PV's name) when
    /// there is no template. The result is validated like any id part, so
    /// no template can produce `..` or an absolute path.
    pub fn sub_dir(
        &self,
        name: &VolumeName,
        parameters: &BTreeMap<String, String>,
    ) -> Result<SubDir> {
        let Some(template) = &self.sub_dir_template else {
            return SubDir::parse(&name.short_dir_name());
        };
        let mut expanded = template.clone();
        for (variable, key) in [
            ("${pvc.metadata.name}", PVC_NAME),
            ("${pvc.metadata.namespace}", PVC_NAMESPACE),
            ("${pv.metadata.name}", PV_NAME),
        ] {
            if expanded.contains(variable) {
                let value = parameters.get(key).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "subDir uses {variable}, but the provisioner did not pass {key} \
                         (run external-provisioner with --extra-create-metadata)"
                    ))
                })?;
                expanded = expanded.replace(variable, value);
            }
        }
        if expanded.contains("${") {
            return Err(Error::InvalidArgument(format!(
                "subDir {template:?} uses an unknown variable; known: ${{pvc.metadata.name}}, \
                 ${{pvc.metadata.namespace}}, ${{pv.metadata.name}}"
            )));
        }
        SubDir::parse(&expanded)
    }
}

/// What the userspace client needs from the mount options: the port and
/// the protocol version (`vers=`/`nfsvers=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    pub port: u16,
    pub version: Option<String>,
}

impl ClientOptions {
    pub fn from_mount_flags(flags: &[String]) -> Result<Self> {
        let mut options = Self {
            port: DEFAULT_PORT,
            version: None,
        };
        for option in flags.iter().flat_map(|f| f.split(',')) {
            let (key, value) = option.trim().split_once('=').unwrap_or((option.trim(), ""));
            match key {
                "port" => {
                    options.port = value.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                        Error::InvalidArgument(format!("mount option {option:?}: bad port"))
                    })?
                }
                "vers" | "nfsvers" => {
                    options.version = Some(match value {
                        "3" => "3".into(),
                        "4.0" => "4.0".into(),
                        // The userspace client's 4.2 fails EXCHANGE_ID; the
                        // operations the controller makes are all in 4.1.
                        "4" | "4.1" | "4.2" => "4.1".into(),
                        other => {
                            return Err(Error::InvalidArgument(format!(
                            "mount option {key}={other}: NFS versions are 3, 4, 4.0, 4.1 and 4.2"
                        )))
                        }
                    })
                }
                _ => {}
            }
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_a_storage_class() {
        let class = NfsClass::parse(&params(&[
            ("server", "10.0.0.5"),
            ("share", "/exports/k8s"),
            ("onDelete", "archive"),
            ("mountPermissions", "0750"),
            ("csi.storage.k8s.io/pvc/name", "data"),
        ]))
        .unwrap();
        assert_eq!(class.on_delete, OnDelete::Archive);
        assert_eq!(class.mode, 0o750);
    }

    #[test]
    fn refuses_unknown_missing_and_bad_parameters() {
        let err = NfsClass::parse(&params(&[
            ("server", "h"),
            ("share", "/e"),
            ("shares", "/x"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("shares"), "{err}");
        assert!(NfsClass::parse(&params(&[("server", "h")])).is_err());
        assert!(NfsClass::parse(&params(&[("server", "h"), ("share", "e")])).is_err());
        assert!(NfsClass::parse(&params(&[
            ("server", "h"),
            ("share", "/e"),
            ("onDelete", "shred")
        ]))
        .is_err());
        assert!(NfsClass::parse(&params(&[
            ("server", "h"),
            ("share", "/e"),
            ("mountPermissions", "999")
        ]))
        .is_err());
        assert!(NfsClass::parse(&params(&[("server", "a/b"), ("share", "/e")])).is_err());
    }

    #[test]
    fn templates_expand_and_cannot_escape() {
        let name = VolumeName::parse("pvc-1").unwrap();
        let meta = params(&[
            ("csi.storage.k8s.io/pvc/name", "data"),
            ("csi.storage.k8s.io/pvc/namespace", "team-a"),
            ("csi.storage.k8s.io/pv/name", "pvc-1"),
        ]);
        let class = |t: Option<&str>| {
            let mut p = params(&[("server", "h"), ("share", "/e")]);
            if let Some(t) = t {
                p.insert("subDir".into(), t.into());
            }
            NfsClass::parse(&p).unwrap()
        };
        assert_eq!(class(None).sub_dir(&name, &meta).unwrap().as_str(), "pvc-1");
        assert_eq!(
            class(Some("${pvc.metadata.namespace}/${pvc.metadata.name}"))
                .sub_dir(&name, &meta)
                .unwrap()
                .as_str(),
            "team-a/data"
        );
        for evil in [
            "../x",
            "/abs",
            "a/../../b",
            "${pvc.metadata.name}/..",
            "${nope}",
            "a//b",
        ] {
            assert!(class(Some(evil)).sub_dir(&name, &meta).is_err(), "{evil}");
        }
        let mut hostile = meta.clone();
        hostile.insert("csi.storage.k8s.io/pvc/namespace".into(), "..".into());
        assert!(class(Some("${pvc.metadata.namespace}/x"))
            .sub_dir(&name, &hostile)
            .is_err());
        assert!(class(Some("${pvc.metadata.name}"))
            .sub_dir(&name, &BTreeMap::new())
            .is_err());
    }

    #[test]
    fn client_options_from_mount_flags() {
        let flags = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ClientOptions::from_mount_flags(&flags(&["nfsvers=4.2", "hard", "port=20490"]))
                .unwrap(),
            ClientOptions {
                port: 20490,
                version: Some("4.1".into())
            }
        );
        assert_eq!(ClientOptions::from_mount_flags(&[]).unwrap().port, 2049);
        assert!(ClientOptions::from_mount_flags(&flags(&["vers=5"])).is_err());
        assert!(ClientOptions::from_mount_flags(&flags(&["port=x"])).is_err());
    }
}
