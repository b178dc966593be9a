//! Load tool (filled in later).
