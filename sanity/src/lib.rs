//! CSI conformance suite and load tool (see issue: sanity/).
