//! The catalog: the bots and the per-user limit overrides in force, which
//! operators change at runtime (the Admin API) without a restart.
//!
//! The configuration file gives the starting point. What operators store
//! through the API overrides it by name: a stored bot replaces the file's
//! bot of that name, a stored deletion (a tombstone) hides it, a stored
//! user override replaces the file's `[limits.users."<sub>"]`. Bots are
//! kept in the store (both stores), user overrides with the limits (Redis,
//! or the embedded quota database).
//!
//! Every `send` reads the catalog, so reading must cost nothing: the
//! current [`Snapshot`] sits behind an `ArcSwap` (a lock-free load), and a
//! change builds a whole new snapshot. An instance applies its own changes
//! at once ([`Catalog::reload`] after the write); other instances see them
//! at their next reload, every [`RELOAD_INTERVAL`] ([`spawn_reloader`]),
//! well within the two seconds PROTOCOL.md promises. A reload that fails
//! (the store or Redis down) keeps the snapshot in force.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use skald_protocol::UserId;

use crate::settings::{BotSettings, EffectiveLimits, LimitOverride, LimitSettings};

/// How often every instance reads the stored bots and overrides again.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// The name of the bot that always exists (it cannot be deleted).
pub const DEFAULT_BOT: &str = "default";

/// A bot as the store keeps it: its settings, or `None` when an operator
/// deleted it (hiding the file's bot of that name, if any).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBot {
    pub name: String,
    pub settings: Option<BotSettings>,
    pub updated_at_ms: i64,
    /// The `sub` of the operator who made the change.
    pub updated_by: UserId,
}

/// Where a bot in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BotSource {
    /// The configuration file.
    File,
    /// The Admin API (the store).
    Api,
}

/// A bot in force.
#[derive(Debug, Clone)]
pub struct Bot {
    pub settings: Arc<BotSettings>,
    pub source: BotSource,
}

/// Everything in force at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    bots: HashMap<String, Bot>,
    users: HashMap<UserId, LimitOverride>,
}

/// What was last read from where operators' changes are kept.
#[derive(Default)]
struct Stored {
    bots: Vec<StoredBot>,
    users: BTreeMap<UserId, LimitOverride>,
}

/// The bots and user overrides in force; see the module doc.
pub struct Catalog {
    /// The file's bots, shared by every snapshot (a reload allocates none).
    file_bots: HashMap<String, Bot>,
    /// The global limits, and the file's user overrides (`limits.users`).
    limits: LimitSettings,
    /// Each source is replaced on its own (the store may answer while
    /// Redis does not); a change rebuilds the snapshot under this lock.
    stored: Mutex<Stored>,
    current: ArcSwap<Snapshot>,
}

impl Catalog {
    /// The file's bots and limits, with nothing stored yet.
    pub fn new(file_bots: BTreeMap<String, BotSettings>, limits: LimitSettings) -> Catalog {
        let file_bots = file_bots
            .into_iter()
            .map(|(name, settings)| {
                let bot = Bot {
                    settings: Arc::new(settings),
                    source: BotSource::File,
                };
                (name, bot)
            })
            .collect();
        let catalog = Catalog {
            file_bots,
            limits,
            stored: Mutex::default(),
            current: ArcSwap::default(),
        };
        catalog.rebuild(&Stored::default());
        catalog
    }

    /// Puts the stored bots in force (replacing those read before).
    pub fn set_bots(&self, bots: Vec<StoredBot>) {
        let mut stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        stored.bots = bots;
        self.rebuild(&stored);
    }

    /// Puts the stored user overrides in force (replacing those read before).
    pub fn set_users(&self, users: BTreeMap<UserId, LimitOverride>) {
        let mut stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        stored.users = users;
        self.rebuild(&stored);
    }

    /// The file's settings with what is stored over them.
    fn rebuild(&self, stored: &Stored) {
        let mut in_force = self.file_bots.clone();
        for stored in &stored.bots {
            match &stored.settings {
                Some(settings) => {
                    let bot = Bot {
                        settings: Arc::new(settings.clone()),
                        source: BotSource::Api,
                    };
                    in_force.insert(stored.name.clone(), bot);
                }
                // `default` always exists: a tombstone cannot hide it.
                None if stored.name != DEFAULT_BOT => {
                    in_force.remove(&stored.name);
                }
                None => {}
            }
        }
        let mut users: HashMap<UserId, LimitOverride> = self
            .limits
            .users
            .iter()
            .map(|(user, o)| (UserId::from(user.clone()), o.clone()))
            .collect();
        users.extend(stored.users.iter().map(|(u, o)| (u.clone(), o.clone())));
        self.current.store(Arc::new(Snapshot {
            bots: in_force,
            users,
        }));
    }

    /// The bot of that name in force.
    pub fn bot(&self, name: &str) -> Option<Bot> {
        self.current.load().bots.get(name).cloned()
    }

    /// The `default` bot (it always exists).
    pub fn default_bot(&self) -> Arc<BotSettings> {
        self.bot(DEFAULT_BOT)
            .map(|b| b.settings)
            .unwrap_or_default()
    }

    /// Every bot in force, by name.
    pub fn bots(&self) -> BTreeMap<String, Bot> {
        let current = self.current.load();
        current
            .bots
            .iter()
            .map(|(name, bot)| (name.clone(), bot.clone()))
            .collect()
    }

    /// The user's override in force (stored, else the file's).
    pub fn user_override(&self, user: &UserId) -> Option<LimitOverride> {
        self.current.load().users.get(user).cloned()
    }

    /// The limits of `user` talking to `bot`: the user's override, then
    /// the bot's, then the global values.
    pub fn limits_for(&self, user: &UserId, bot: &BotSettings) -> EffectiveLimits {
        let current = self.current.load();
        self.limits.effective(current.users.get(user), bot)
    }
}

/// Reads the stored bots and overrides every [`RELOAD_INTERVAL`] until the
/// returned handle is aborted or the services are dropped.
pub fn spawn_reloader(services: Weak<crate::Services>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(services) = services.upgrade() else {
                return;
            };
            if let Err(e) = reload(&services).await {
                tracing::warn!(error = %e, "could not reload bots and user limits; keeping those in force");
            }
        }
    })
}

/// Why a reload failed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Store(#[from] crate::ports::store::StoreError),
    #[error(transparent)]
    Limits(#[from] crate::ports::limits::LimitsError),
}

/// Reads what is stored and puts it in force at once; a source that
/// cannot be read keeps what was read from it before.
pub async fn reload(services: &crate::Services) -> Result<(), ReloadError> {
    let (bots, users) = tokio::join!(
        services.store.stored_bots(),
        services.limits_guard.user_limits()
    );
    let (bots, users) = (
        bots.map(|b| services.catalog.set_bots(b)),
        users.map(|u| services.catalog.set_users(u)),
    );
    bots?;
    users?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(name: &str, settings: Option<BotSettings>) -> StoredBot {
        StoredBot {
            name: name.into(),
            settings,
            updated_at_ms: 0,
            updated_by: UserId::from("ops".to_owned()),
        }
    }

    fn file() -> Catalog {
        let mut limits = LimitSettings::default();
        limits.users.insert(
            "vip".into(),
            LimitOverride {
                monthly_tokens: Some(9),
                ..Default::default()
            },
        );
        let bots = BTreeMap::from([
            (DEFAULT_BOT.to_owned(), BotSettings::default()),
            ("support".to_owned(), BotSettings::default()),
        ]);
        Catalog::new(bots, limits)
    }

    #[test]
    fn stored_bots_override_hide_and_add_but_never_hide_default() {
        let catalog = file();
        let changed = BotSettings {
            max_tokens: 7,
            ..Default::default()
        };
        catalog.set_bots(vec![
            stored("support", None),
            stored(DEFAULT_BOT, None),
            stored("sales", Some(changed.clone())),
        ]);
        assert!(catalog.bot("support").is_none());
        assert_eq!(catalog.bot(DEFAULT_BOT).unwrap().source, BotSource::File);
        let sales = catalog.bot("sales").unwrap();
        assert_eq!((*sales.settings).clone(), changed);
        assert_eq!(sales.source, BotSource::Api);
        // Nothing stored brings the file's bots back.
        catalog.set_bots(Vec::new());
        assert!(catalog.bot("support").is_some());
        assert!(catalog.bot("sales").is_none());
    }

    #[test]
    fn a_stored_user_override_replaces_the_files_and_wins_over_the_bot() {
        let catalog = file();
        let vip = UserId::from("vip".to_owned());
        let bot = BotSettings {
            monthly_tokens: Some(5),
            monthly_requests: Some(6),
            ..Default::default()
        };
        assert_eq!(catalog.limits_for(&vip, &bot).monthly_tokens, 9);
        let stored = LimitOverride {
            monthly_requests: Some(3),
            ..Default::default()
        };
        catalog.set_users(BTreeMap::from([(vip.clone(), stored)]));
        let limits = catalog.limits_for(&vip, &bot);
        // The stored override replaces the file's whole: its tokens fall
        // back to the bot's.
        assert_eq!((limits.monthly_tokens, limits.monthly_requests), (5, 3));
        let other = UserId::from("someone".to_owned());
        assert_eq!(catalog.limits_for(&other, &bot).monthly_requests, 6);
    }
}
