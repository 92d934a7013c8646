//! Rate limits and quotas: the in-process backend, the failover policy,
//! and the two actors that own the decisions.

pub mod guard;
pub mod local;
pub mod quota_keeper;
pub mod rate_limiter;
