//! Rate limits and quotas: the in-process backend, the contract every
//! backend must pass, the failover policy, and the two actors.

pub mod contract;
pub mod guard;
pub mod local;
pub mod quota_keeper;
pub mod rate_limiter;
