//! CreateVolume's `capacity_range` arithmetic (spec.md, CapacityRange):
//! `required_bytes` is a floor, `limit_bytes` a ceiling, zero means unset.

use cairn_proto::v1::CapacityRange;

use crate::error::{quote, Error};

/// A validated request: the floor and the optional ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub required: u64,
    pub limit: Option<u64>,
}

impl Range {
    /// Validates the wire form; absent means "no constraint".
    pub fn parse(range: Option<&CapacityRange>) -> Result<Self, Error> {
        let Some(range) = range else {
            return Ok(Self {
                required: 0,
                limit: None,
            });
        };
        let non_negative = |field: &str, v: i64| {
            u64::try_from(v)
                .map_err(|_| Error::InvalidArgument(format!("capacity_range.{field} is negative")))
        };
        let required = non_negative("required_bytes", range.required_bytes)?;
        let limit = non_negative("limit_bytes", range.limit_bytes)?;
        let limit = (limit > 0).then_some(limit);
        if let Some(limit) = limit {
            if limit < required {
                return Err(Error::OutOfRange(format!(
                    "capacity_range.limit_bytes {limit} is below required_bytes {required}"
                )));
            }
        }
        Ok(Self { required, limit })
    }

    /// The size to give a new volume: the floor if one is set, otherwise the
    /// default (lowered to the ceiling); never more than `max`.
    pub fn choose(&self, default: u64, max: u64) -> Result<u64, Error> {
        let size = if self.required > 0 {
            self.required
        } else {
            self.limit.map_or(default, |limit| default.min(limit))
        };
        if size > max {
            return Err(Error::OutOfRange(format!(
                "{size} bytes requested; at most {max} can be provisioned here"
            )));
        }
        Ok(size)
    }

    /// The size a volume of `current` bytes has after ControllerExpandVolume
    /// with this range. A volume already at least `required_bytes` large
    /// stays as it is (spec: "already larger than or equal to the target
    /// capacity ... SHOULD reply 0 OK"); a `limit_bytes` below `current`
    /// would need shrinking, which no volume does (OutOfRange).
    pub fn grow(&self, current: u64) -> Result<u64, Error> {
        if self.required == 0 && self.limit.is_none() {
            return Err(Error::InvalidArgument(
                "capacity_range must set required_bytes (the new size)".into(),
            ));
        }
        if let Some(limit) = self.limit {
            if current > limit {
                return Err(Error::OutOfRange(format!(
                    "the volume holds {current} bytes; limit_bytes {limit} would shrink it, \
                     and volumes cannot shrink"
                )));
            }
        }
        Ok(current.max(self.required))
    }

    /// The size of a new volume filled from a source (snapshot or volume)
    /// of `size` bytes: the requested size, at least the source's
    /// (OUT_OF_RANGE when the range excludes it, as the spec's CreateVolume
    /// errors say, and as external-provisioner refuses a claim smaller than
    /// its source), the source's size when none is requested.
    pub fn for_copy_of(&self, size: u64, default: u64, max: u64) -> Result<u64, Error> {
        if let Some(limit) = self.limit {
            if limit < size {
                return Err(Error::OutOfRange(format!(
                    "capacity_range.limit_bytes {limit} is below the source's size of {size} bytes"
                )));
            }
        }
        if self.required > 0 && self.required < size {
            return Err(Error::OutOfRange(format!(
                "capacity_range.required_bytes {} is below the source's size of {size} bytes; \
                 a volume cannot be smaller than its source",
                self.required
            )));
        }
        Range {
            required: self.required.max(size),
            limit: self.limit,
        }
        .choose(default, max)
    }

    /// Whether an existing volume of `size` bytes satisfies this request.
    pub fn admits(&self, size: u64) -> bool {
        size >= self.required && self.limit.is_none_or(|limit| size <= limit)
    }
}

/// Parses a Kubernetes-style quantity: `1024`, `10Mi`, `1Gi`, `5G`.
pub fn parse_quantity(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{} is not a size (try 1Gi, 512Mi, 1073741824)", quote(text)))?;
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
        other => {
            return Err(format!(
                "unknown size suffix {} in {}",
                quote(other),
                quote(text)
            ))
        }
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{} is too large", quote(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_at_least_their_source() {
        let r = |required, limit| Range { required, limit };
        assert_eq!(r(0, None).for_copy_of(100, 50, 1000).unwrap(), 100);
        assert_eq!(r(200, None).for_copy_of(100, 50, 1000).unwrap(), 200);
        assert_eq!(r(0, Some(150)).for_copy_of(100, 50, 1000).unwrap(), 100);
        assert_eq!(r(100, Some(100)).for_copy_of(100, 50, 1000).unwrap(), 100);
        for bad in [r(99, None), r(0, Some(99))] {
            assert!(matches!(
                bad.for_copy_of(100, 50, 1000),
                Err(Error::OutOfRange(_))
            ));
        }
        assert!(matches!(
            r(0, None).for_copy_of(2000, 50, 1000),
            Err(Error::OutOfRange(_))
        ));
    }

    const GI: u64 = 1 << 30;

    fn range(required: i64, limit: i64) -> Result<Range, Error> {
        Range::parse(Some(&CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        }))
    }

    #[test]
    fn absent_range_gives_the_default() {
        assert_eq!(Range::parse(None).unwrap().choose(GI, 10 * GI).unwrap(), GI);
        assert_eq!(range(0, 0).unwrap().choose(GI, 10 * GI).unwrap(), GI);
    }

    #[test]
    fn required_wins_and_limit_caps_the_default() {
        assert_eq!(range(5, 0).unwrap().choose(GI, 10 * GI).unwrap(), 5);
        assert_eq!(range(0, 1000).unwrap().choose(GI, 10 * GI).unwrap(), 1000);
        assert_eq!(
            range(0, 2 * GI as i64)
                .unwrap()
                .choose(GI, 10 * GI)
                .unwrap(),
            GI
        );
    }

    #[test]
    fn unsatisfiable_ranges_are_out_of_range() {
        assert!(matches!(range(10, 5), Err(Error::OutOfRange(_))));
        assert!(matches!(
            range(11 * GI as i64, 0).unwrap().choose(GI, 10 * GI),
            Err(Error::OutOfRange(_))
        ));
        assert!(matches!(range(-1, 0), Err(Error::InvalidArgument(_))));
        assert!(matches!(range(0, -1), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn admits_checks_both_bounds() {
        let r = range(10, 20).unwrap();
        assert!(r.admits(10) && r.admits(20));
        assert!(!r.admits(9) && !r.admits(21));
        assert!(range(10, 0).unwrap().admits(u64::MAX));
    }

    #[test]
    fn grow_never_shrinks() {
        let gi = GI as i64;
        assert_eq!(range(2 * gi, 0).unwrap().grow(GI).unwrap(), 2 * GI);
        assert_eq!(range(GI as i64, 0).unwrap().grow(GI).unwrap(), GI);
        // Already larger than asked: unchanged, not an error.
        assert_eq!(range(gi / 2, 0).unwrap().grow(GI).unwrap(), GI);
        assert_eq!(range(gi / 2, 2 * gi).unwrap().grow(GI).unwrap(), GI);
        // A ceiling below the current size would shrink it.
        assert!(matches!(
            range(0, gi / 2).unwrap().grow(GI),
            Err(Error::OutOfRange(_))
        ));
        assert!(matches!(
            range(0, 0).unwrap().grow(GI),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("1Gi").unwrap(), GI);
        assert_eq!(parse_quantity("10Mi").unwrap(), 10 << 20);
        assert_eq!(parse_quantity("5G").unwrap(), 5_000_000_000);
        assert_eq!(parse_quantity("4096").unwrap(), 4096);
        assert!(parse_quantity("1Xi").is_err());
        assert!(parse_quantity("Gi").is_err());
        assert!(parse_quantity("99999999999Ti").is_err());
    }
}
