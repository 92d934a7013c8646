//! Where the current ref of a shared actor lives.
//!
//! The root supervisor restarts a shared actor that fails, and the new one
//! has a new ref. Everything that talks to a shared actor holds its
//! [`Slot`] instead of a ref, so no caller ever keeps a ref to a dead
//! actor. Each actor's module adds the typed calls its callers make to its
//! own `Slot<Msg>` (e.g. `Slot<PersisterMsg>::persist`), so a caller never
//! builds another actor's messages.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorId, ActorRef, Message, RpcReplyPort};

use crate::ActorsError;

/// Bound on an internal request to a shared actor (they answer in
/// microseconds; this only matters if one is wedged).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Slot<M> {
    current: RwLock<Option<ActorRef<M>>>,
}

impl<M: Message> Slot<M> {
    pub fn empty() -> Arc<Slot<M>> {
        Arc::new(Slot {
            current: RwLock::new(None),
        })
    }

    pub(crate) fn set(&self, actor: Option<ActorRef<M>>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = actor;
    }

    pub fn get(&self) -> Option<ActorRef<M>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the actor in this slot has this id.
    pub(crate) fn holds(&self, id: ActorId) -> bool {
        self.get().is_some_and(|a| a.get_id() == id)
    }

    /// Sends without waiting for an answer.
    pub(crate) fn cast(&self, message: M) -> Result<(), ActorsError> {
        self.get()
            .ok_or(ActorsError::Stopped)?
            .cast(message)
            .map_err(|_| ActorsError::Stopped)
    }

    /// Asks and waits (at most `timeout`) for the answer.
    pub(crate) async fn call_within<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<T>) -> M,
        timeout: Duration,
    ) -> Result<T, ActorsError> {
        let actor = self.get().ok_or(ActorsError::Stopped)?;
        match actor.call(build, Some(timeout)).await {
            Ok(CallResult::Success(answer)) => Ok(answer),
            Ok(CallResult::Timeout) => Err(ActorsError::Timeout),
            Ok(CallResult::SenderError) | Err(_) => Err(ActorsError::Stopped),
        }
    }

    /// Asks and waits, within [`CALL_TIMEOUT`].
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<T>) -> M,
    ) -> Result<T, ActorsError> {
        self.call_within(build, CALL_TIMEOUT).await
    }
}
