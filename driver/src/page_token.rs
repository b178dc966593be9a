//! Pagination tokens for ListVolumes and ListSnapshots.
//!
//! A token names the last key of the page it ends, plus a check value, so
//! that a `starting_token` Cairn never issued ("garbage", "-1", a volume
//! name) is told apart from one it did and answered ABORTED (spec:
//! "Invalid starting_token"), instead of being taken as a place to start.
//! The check is not a secret: tokens are not a security boundary, only a
//! guard against listing from a position nobody was given. Tokens stay
//! valid across restarts and after the key they name is deleted, so a
//! listing with volumes coming and going between pages goes on.

use sha2::{Digest, Sha256};

use crate::error::{quote, Error, Result};
use crate::ids::VolumeKey;

/// Separates the key from its check value; keys never contain it.
const SEPARATOR: char = '!';
const CHECK_HEX_LEN: usize = 12;

fn check_value(kind: &str, key: &str) -> String {
    let digest = Sha256::digest(format!("cairn-page-token:{kind}:{key}").as_bytes());
    digest
        .iter()
        .take(CHECK_HEX_LEN / 2)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Cuts `items` (in key order) to the first `max` (0: no limit) and returns
/// the key the next page resumes after, when more remain.
pub fn take_page<T>(
    items: &mut Vec<T>,
    max: usize,
    key: impl Fn(&T) -> &VolumeKey,
) -> Option<VolumeKey> {
    let limit = if max == 0 { items.len() } else { max };
    let next = (items.len() > limit).then(|| key(&items[limit - 1]).clone());
    items.truncate(limit);
    next
}

/// The token of a page of `kind` ("volumes", "snapshots") that ended at `key`.
pub fn issue(kind: &str, key: &VolumeKey) -> String {
    format!("{key}{SEPARATOR}{}", check_value(kind, key.as_str()))
}

/// The key a token of `kind` resumes after: `None` for no token, ABORTED
/// for one Cairn did not issue for this kind of listing.
pub fn parse(kind: &str, token: &str) -> Result<Option<VolumeKey>> {
    if token.is_empty() {
        return Ok(None);
    }
    let aborted = || {
        Error::Aborted(format!(
            "starting_token {} is not a token this driver issued for listing {kind}; \
             start the listing again without one",
            quote(token)
        ))
    };
    let (key, check) = token.rsplit_once(SEPARATOR).ok_or_else(aborted)?;
    let key = VolumeKey::parse(key).map_err(|_| aborted())?;
    if check != check_value(kind, key.as_str()) {
        return Err(aborted());
    }
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_round_trip() {
        let key = VolumeKey::parse("pvc-1").unwrap();
        let token = issue("volumes", &key);
        assert_eq!(parse("volumes", &token).unwrap(), Some(key));
        assert_eq!(parse("volumes", "").unwrap(), None);
    }

    #[test]
    fn tokens_never_issued_are_aborted() {
        let key = VolumeKey::parse("pvc-1").unwrap();
        let snapshot_token = issue("snapshots", &key);
        for bad in [
            "garbage",
            "-1",
            "999999",
            "pvc-1",
            "pvc-1!",
            "pvc-1!000000000000",
            "../x!abc",
            snapshot_token.as_str(),
        ] {
            let err = parse("volumes", bad).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Aborted, "{bad:?}");
        }
        let huge = "x".repeat(1 << 20);
        let err = parse("volumes", &huge).unwrap_err();
        assert!(err.to_string().len() < 500);
    }
}
