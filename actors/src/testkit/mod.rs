//! What the adapters' tests share: the contract suites that every store and
//! every limits backend must pass. Behind the `testkit` feature, so the
//! production library does not carry them.

pub mod limits;
pub mod model;
pub mod store;
