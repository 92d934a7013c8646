//! `skald migrate`: applies `migrations/*.cql`, embedded in the binary, in
//! order, each once.
//!
//! Applied versions are recorded in `schema_migrations` with a checksum of
//! the file (a released migration is never edited: a changed file is an
//! error, not a silent skip). Several instances may migrate at once: they
//! take turns through a lease in `schema_migration_lock`, claimed with a
//! lightweight transaction and held with a TTL, so that schema changes are
//! never issued concurrently and a crashed holder frees it by itself. The
//! migrations are also written to be idempotent (`CREATE TABLE IF NOT
//! EXISTS`), so a holder that died half-way leaves nothing a rerun trips
//! on; an `ALTER TABLE ... ADD` (which ScyllaDB cannot make conditional) is
//! skipped when the driver's schema metadata already has its columns.

use std::time::{Duration, Instant};

use ::scylla::client::session::Session;
use ::scylla::response::query_result::QueryResult;
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::statement::unprepared::Statement;
use ::scylla::statement::SerialConsistency;
use ::scylla::value::{CqlTimestamp, CqlValue, Row};
use ::scylla::{DeserializeRow, SerializeRow};

use super::ScyllaError;

/// One embedded migration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    /// The file name, `NNNN_what_it_does.cql`.
    pub name: &'static str,
    pub cql: &'static str,
}

/// Every file of `migrations/`, in order (a test checks this list against
/// the directory).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_chat_history_and_audit.cql",
        cql: include_str!("../../../migrations/0001_chat_history_and_audit.cql"),
    },
    Migration {
        version: 2,
        name: "0002_answer_ends_checkpoints_and_open_answers.cql",
        cql: include_str!("../../../migrations/0002_answer_ends_checkpoints_and_open_answers.cql"),
    },
    Migration {
        version: 3,
        name: "0003_reasoning_and_tool_turns.cql",
        cql: include_str!("../../../migrations/0003_reasoning_and_tool_turns.cql"),
    },
    Migration {
        version: 4,
        name: "0004_admin_api.cql",
        cql: include_str!("../../../migrations/0004_admin_api.cql"),
    },
];

/// The schema version this build needs.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Tables of the migration machinery itself, created before anything else.
pub const CREATE_SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\
     version int PRIMARY KEY, name text, checksum text, applied_at timestamp)";
pub const CREATE_MIGRATION_LOCK: &str =
    "CREATE TABLE IF NOT EXISTS schema_migration_lock (name text PRIMARY KEY, owner text)";
pub const ACQUIRE_LOCK: &str = "INSERT INTO schema_migration_lock (name, owner) \
     VALUES ('migrate', :owner) IF NOT EXISTS USING TTL :ttl";
pub const RENEW_LOCK: &str = "UPDATE schema_migration_lock USING TTL :ttl SET owner = :owner \
     WHERE name = 'migrate' IF owner = :owner";
pub const RELEASE_LOCK: &str =
    "DELETE FROM schema_migration_lock WHERE name = 'migrate' IF owner = :owner";
/// A whole-table read of a table of a few rows (one per migration).
pub const SELECT_APPLIED: &str = "SELECT version, name, checksum FROM schema_migrations";
pub const RECORD_APPLIED: &str =
    "INSERT INTO schema_migrations (version, name, checksum, applied_at) \
     VALUES (:version, :name, :checksum, :applied_at)";

/// How long the lease lasts without renewal (renewed before each file).
pub const LOCK_TTL_SECS: i32 = 60;
/// How long an instance waits for another one's migration before giving up.
pub const LOCK_WAIT: Duration = Duration::from_secs(300);
const LOCK_POLL: Duration = Duration::from_secs(1);

/// The values of the lock's statements (release binds only the owner).
#[derive(SerializeRow)]
struct Lease<'a> {
    owner: &'a str,
    ttl: i32,
}

#[derive(SerializeRow)]
struct Owner<'a> {
    owner: &'a str,
}

#[derive(SerializeRow)]
struct Applied<'a> {
    version: i32,
    name: &'a str,
    checksum: String,
    applied_at: CqlTimestamp,
}

#[derive(DeserializeRow)]
struct AppliedRow {
    version: i32,
    #[allow(dead_code)] // selected for people reading the table
    name: Option<String>,
    checksum: Option<String>,
}

/// The features of the node answering: ScyllaDB lists `TABLETS` there when
/// it can place a keyspace on tablets (Cassandra has no such column).
pub const SELECT_FEATURES: &str = "SELECT supported_features FROM system.local WHERE key = 'local'";

/// Whether a `supported_features` list names tablets.
pub fn supports_tablets(features: &str) -> bool {
    features.split(',').any(|f| f.trim() == "TABLETS")
}

/// The `CREATE KEYSPACE` statement; `keyspace` and `replication` must have
/// passed [`check_keyspace`] and [`check_replication`]. Where ScyllaDB
/// supports tablets the keyspace asks for vnodes: lightweight transactions
/// (the idempotency keys, the migration lock) are not available in
/// keyspaces on tablets.
pub fn create_keyspace(keyspace: &str, replication: &str, tablets: bool) -> String {
    let mut cql =
        format!("CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication}");
    if tablets {
        cql.push_str(" AND tablets = {'enabled': false}");
    }
    cql
}

async fn node_supports_tablets(session: &Session) -> bool {
    let features = async {
        let rows = session
            .query_unpaged(SELECT_FEATURES, ())
            .await
            .ok()?
            .into_rows_result()
            .ok()?;
        let (features,): (Option<String>,) = rows.first_row().ok()?;
        features
    };
    features.await.is_some_and(|f| supports_tablets(&f))
}

/// A keyspace name as CQL accepts it unquoted (it is spliced into CQL).
pub fn check_keyspace(keyspace: &str) -> Result<(), String> {
    let mut chars = keyspace.chars();
    let ok = keyspace.len() <= 48
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "keyspace {keyspace:?} must be a letter then letters, digits or _ (at most 48)"
        ))
    }
}

/// A replication map literal, `{'class': ..., ...}` (spliced into CQL).
pub fn check_replication(replication: &str) -> Result<(), String> {
    let r = replication.trim();
    let ok = r.starts_with('{')
        && r.ends_with('}')
        && r.contains("'class'")
        && !r.contains(';')
        && !r.contains("--")
        && r[1..r.len() - 1].chars().all(|c| !matches!(c, '{' | '}'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "replication {replication:?} must be a CQL map such as \
             {{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}}"
        ))
    }
}

/// The version of a migration file name `NNNN_what.cql`.
pub fn version_of(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(".cql")?;
    let (digits, rest) = stem.split_once('_')?;
    if digits.len() != 4 || rest.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The statements of a migration file: split on `;`, with `--` and `//`
/// comments removed, `;` inside quoted strings kept.
pub fn statements(cql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = cql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '-' | '/' if chars.peek() == Some(&c) => {
                // A comment: skip to the end of the line.
                for c in chars.by_ref() {
                    if c == '\n' {
                        current.push('\n');
                        break;
                    }
                }
            }
            '\'' | '"' => {
                current.push(c);
                // A quoted string or identifier: copy it whole; a doubled
                // quote is an escaped one and continues the string.
                while let Some(d) = chars.next() {
                    current.push(d);
                    if d == c {
                        if chars.peek() == Some(&c) {
                            current.push(c);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
            }
            ';' => {
                push_statement(&mut out, &current);
                current.clear();
            }
            _ => current.push(c),
        }
    }
    push_statement(&mut out, &current);
    out
}

fn push_statement(out: &mut Vec<String>, text: &str) {
    let text = text.trim();
    if !text.is_empty() {
        out.push(text.to_owned());
    }
}

/// A checksum of a migration file (FNV-1a, 64 bits, hex): enough to notice
/// that a released file was edited. Carriage returns are left out, so a
/// checkout with Windows line endings has the same checksum.
pub fn checksum(cql: &str) -> String {
    use std::hash::Hasher;
    let mut hash = fnv::FnvHasher::default();
    for b in cql.bytes().filter(|b| *b != b'\r') {
        hash.write_u8(b);
    }
    format!("{:016x}", hash.finish())
}

/// The migrations still to apply, given the applied (version, checksum)
/// pairs; an applied version whose checksum differs from the embedded file
/// is an error.
pub fn pending(applied: &[(u32, String)]) -> Result<Vec<Migration>, ScyllaError> {
    for (version, sum) in applied {
        if let Some(m) = MIGRATIONS.iter().find(|m| m.version == *version) {
            if checksum(m.cql) != *sum {
                return Err(ScyllaError::Migration(format!(
                    "{} was applied with checksum {sum} but the embedded file has {}: \
                     a released migration must not change; add a new file instead",
                    m.name,
                    checksum(m.cql)
                )));
            }
        }
    }
    Ok(MIGRATIONS
        .iter()
        .filter(|m| !applied.iter().any(|(v, _)| *v == m.version))
        .copied()
        .collect())
}

/// Creates the keyspace if needed (with `replication`, a CQL map literal),
/// switches `session` to it, and applies every embedded migration not yet
/// applied, in order. Returns the versions applied by this call (empty when
/// the schema was up to date). Safe to run from several instances at once.
pub async fn migrate(
    session: &Session,
    keyspace: &str,
    replication: &str,
) -> Result<Vec<u32>, ScyllaError> {
    check_keyspace(keyspace).map_err(ScyllaError::Settings)?;
    check_replication(replication).map_err(ScyllaError::Settings)?;
    // Schema statements are not retried: the driver waits for schema
    // agreement after each, and each is `IF NOT EXISTS`, so a rerun of the
    // whole migration is the retry.
    let tablets = node_supports_tablets(session).await;
    session
        .query_unpaged(create_keyspace(keyspace, replication, tablets), ())
        .await?;
    session.use_keyspace(keyspace, false).await?;
    session.query_unpaged(CREATE_SCHEMA_MIGRATIONS, ()).await?;
    session.query_unpaged(CREATE_MIGRATION_LOCK, ()).await?;

    let owner = uuid::Uuid::now_v7().to_string();
    // The lease is cluster-wide (SERIAL, not LOCAL_SERIAL): instances in
    // different datacenters must take turns too.
    let acquire = prepare_lock(session, "acquire_lock", ACQUIRE_LOCK).await?;
    let renew = prepare_lock(session, "renew_lock", RENEW_LOCK).await?;
    let release = prepare_lock(session, "release_lock", RELEASE_LOCK).await?;
    let started = Instant::now();
    loop {
        let result = session
            .execute_unpaged(
                &acquire,
                Lease {
                    owner: &owner,
                    ttl: LOCK_TTL_SECS,
                },
            )
            .await?;
        if lwt_applied(result)? {
            break;
        }
        if started.elapsed() > LOCK_WAIT {
            return Err(ScyllaError::Migration(format!(
                "another instance has held the migration lock for over {} s \
                 (it frees itself {LOCK_TTL_SECS} s after its holder stops)",
                LOCK_WAIT.as_secs()
            )));
        }
        tracing::info!("waiting for another instance's migration");
        tokio::time::sleep(LOCK_POLL).await;
    }
    let outcome = apply_pending(session, keyspace, &renew, &owner).await;
    // Release even after a failure; if this fails too, the TTL frees it.
    if let Err(e) = session
        .execute_unpaged(&release, Owner { owner: &owner })
        .await
    {
        tracing::warn!(error = %e, "could not release the migration lock; it expires by itself");
    }
    outcome
}

async fn apply_pending(
    session: &Session,
    keyspace: &str,
    renew: &PreparedStatement,
    owner: &str,
) -> Result<Vec<u32>, ScyllaError> {
    let applied = applied_versions(session).await?;
    let mut done = Vec::new();
    for migration in pending(&applied)? {
        let lease = Lease {
            owner,
            ttl: LOCK_TTL_SECS,
        };
        let still_ours = session.execute_unpaged(renew, lease).await?;
        if !lwt_applied(still_ours)? {
            return Err(ScyllaError::Migration(
                "lost the migration lock (it expired): run `skald migrate` again".into(),
            ));
        }
        tracing::info!(migration = migration.name, "applying");
        for statement in statements(migration.cql) {
            if already_added(session, keyspace, &statement).await? {
                tracing::info!(migration = migration.name, %statement, "columns exist: skipped");
                continue;
            }
            let mut statement = Statement::new(statement);
            statement.set_is_idempotent(false);
            session
                .query_unpaged(statement, ())
                .await
                .map_err(|e| ScyllaError::Migration(format!("{}: {e}", migration.name)))?;
        }
        session
            .query_unpaged(
                RECORD_APPLIED,
                Applied {
                    version: migration.version as i32,
                    name: migration.name,
                    checksum: checksum(migration.cql),
                    applied_at: CqlTimestamp(skald_actors::time::now_ms()),
                },
            )
            .await?;
        done.push(migration.version);
    }
    Ok(done)
}

/// The applied (version, checksum) pairs, oldest first.
pub async fn applied_versions(session: &Session) -> Result<Vec<(u32, String)>, ScyllaError> {
    let rows = session
        .query_unpaged(SELECT_APPLIED, ())
        .await?
        .into_rows_result()
        .map_err(ScyllaError::result)?;
    let mut applied = Vec::new();
    for row in rows.rows::<AppliedRow>().map_err(ScyllaError::result)? {
        let row = row.map_err(ScyllaError::result)?;
        applied.push((row.version as u32, row.checksum.unwrap_or_default()));
    }
    applied.sort();
    Ok(applied)
}

/// The table and columns an `ALTER TABLE <table> ADD (<column> <type>, ...)`
/// (or `ADD <column> <type>`) adds; `None` for any other statement.
pub fn added_columns(statement: &str) -> Option<(String, Vec<String>)> {
    let normal = statement.split_whitespace().collect::<Vec<_>>().join(" ");
    const ALTER: &str = "ALTER TABLE ";
    let upper = normal.to_ascii_uppercase();
    let rest = upper.strip_prefix(ALTER)?;
    let table_end = ALTER.len() + rest.find(' ')?;
    if !upper[table_end..].starts_with(" ADD ") {
        return None;
    }
    let table = &normal[ALTER.len()..table_end];
    let definitions = normal[table_end + " ADD ".len()..].trim();
    let definitions = definitions
        .strip_prefix('(')
        .and_then(|d| d.strip_suffix(')'))
        .unwrap_or(definitions);
    // Split on the commas between definitions, not those of a type's
    // parameters (`map<text, int>`).
    let (mut columns, mut depth, mut start) = (Vec::new(), 0i32, true);
    for (i, c) in definitions.char_indices() {
        match c {
            '<' | '(' => depth += 1,
            '>' | ')' => depth -= 1,
            ',' if depth == 0 => start = true,
            c if start && !c.is_whitespace() => {
                let name = definitions[i..].split_whitespace().next()?;
                columns.push(name.to_ascii_lowercase());
                start = false;
            }
            _ => {}
        }
    }
    (!columns.is_empty()).then(|| (table.to_ascii_lowercase(), columns))
}

/// The columns of one table, from the schema tables both servers have.
const SELECT_COLUMNS: &str = "SELECT column_name FROM system_schema.columns \
     WHERE keyspace_name = :keyspace_name AND table_name = :table_name";

#[derive(SerializeRow)]
struct TableName<'a> {
    keyspace_name: &'a str,
    table_name: &'a str,
}

/// Whether `statement` adds columns that the table already has, all of
/// them (a rerun of a migration that stopped after its `ALTER`). Some but
/// not all is an error: that schema is not one a migration made.
async fn already_added(
    session: &Session,
    keyspace: &str,
    statement: &str,
) -> Result<bool, ScyllaError> {
    let Some((table, columns)) = added_columns(statement) else {
        return Ok(false);
    };
    let rows = session
        .query_unpaged(
            SELECT_COLUMNS,
            TableName {
                keyspace_name: keyspace,
                table_name: &table,
            },
        )
        .await?
        .into_rows_result()
        .map_err(ScyllaError::result)?;
    let mut existing = std::collections::HashSet::new();
    for row in rows.rows::<(String,)>().map_err(ScyllaError::result)? {
        existing.insert(row.map_err(ScyllaError::result)?.0);
    }
    match columns.iter().filter(|c| existing.contains(*c)).count() {
        0 => Ok(false),
        n if n == columns.len() => Ok(true),
        _ => Err(ScyllaError::Migration(format!(
            "{table} has some of the columns of `{statement}` but not all: fix the schema by hand"
        ))),
    }
}

/// Whether a lightweight transaction applied: its `[applied]` column.
pub fn lwt_applied(result: QueryResult) -> Result<bool, ScyllaError> {
    let rows = result.into_rows_result().map_err(ScyllaError::result)?;
    let (index, _) = rows
        .column_specs()
        .get_by_name("[applied]")
        .ok_or_else(|| ScyllaError::Result("no [applied] column in an LWT result".into()))?;
    let row: Row = rows.first_row().map_err(ScyllaError::result)?;
    match row.columns.get(index) {
        Some(Some(CqlValue::Boolean(applied))) => Ok(*applied),
        other => Err(ScyllaError::Result(format!(
            "[applied] is not a boolean: {other:?}"
        ))),
    }
}

async fn prepare_lock(
    session: &Session,
    name: &'static str,
    cql: &'static str,
) -> Result<PreparedStatement, ScyllaError> {
    let mut statement = session
        .prepare(cql)
        .await
        .map_err(|source| ScyllaError::prepare(name, source))?;
    statement.set_is_idempotent(false);
    statement.set_serial_consistency(Some(SerialConsistency::Serial));
    Ok(statement)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded list is the directory: every `*.cql` file, in order,
    /// with the same contents (a file added without a line here, or the
    /// reverse, fails).
    #[test]
    fn the_embedded_migrations_are_the_directory() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut on_disk: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "cql"))
            .map(|p| {
                let name = p.file_name().unwrap().to_str().unwrap().to_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        on_disk.sort();
        let embedded: Vec<(String, String)> = MIGRATIONS
            .iter()
            .map(|m| (m.name.to_owned(), m.cql.to_owned()))
            .collect();
        assert_eq!(embedded, on_disk);
    }

    #[test]
    fn versions_come_from_the_names_and_count_up_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(version_of(m.name), Some(m.version), "{}", m.name);
            assert_eq!(
                m.version as usize,
                i + 1,
                "{}: versions have no gaps",
                m.name
            );
        }
        assert_eq!(latest_version(), 4);
        assert_eq!(version_of("0002_add_things.cql"), Some(2));
        assert_eq!(version_of("2_things.cql"), None);
        assert_eq!(version_of("0002.cql"), None);
        assert_eq!(version_of("0002_things.sql"), None);
        assert_eq!(version_of("00a2_things.cql"), None);
    }

    /// A released migration never changes: its checksum is pinned here.
    /// (Recorded in `schema_migrations`; a changed file is refused.)
    #[test]
    fn released_migrations_keep_their_checksums() {
        let pinned = [
            (1, "03f5431acbf04f07"),
            (2, "b5e80e14ab516cfb"),
            (3, "a156d8fd6a84fc90"),
            (4, "b9c90808de197153"),
        ];
        for (version, sum) in pinned {
            let m = MIGRATIONS.iter().find(|m| m.version == version).unwrap();
            assert_eq!(
                checksum(m.cql),
                sum,
                "{} changed: add a new migration instead",
                m.name
            );
        }
        assert_eq!(checksum(""), "cbf29ce484222325");
        assert_eq!(checksum("a"), "af63dc4c8601ec8c");
        assert_eq!(checksum("a\r\nb"), checksum("a\nb"));
    }

    #[test]
    fn statements_split_on_semicolons_outside_comments_and_strings() {
        let cql = "-- a comment; with a semicolon and an apostrophe's\n\
                   CREATE TABLE IF NOT EXISTS a (k text PRIMARY KEY); // another; one\n\
                   INSERT INTO a (k) VALUES ('x;y''s -- z');\n\
                   \n  ;  \n\
                   SELECT k FROM a";
        assert_eq!(
            statements(cql),
            [
                "CREATE TABLE IF NOT EXISTS a (k text PRIMARY KEY)",
                "INSERT INTO a (k) VALUES ('x;y''s -- z')",
                "SELECT k FROM a",
            ]
        );
        assert!(statements("-- nothing\n\n").is_empty());
        assert_eq!(statements("a - b / c"), ["a - b / c"]);
    }

    #[test]
    fn pending_skips_applied_versions_and_refuses_edited_ones() {
        assert_eq!(pending(&[]).unwrap(), MIGRATIONS.to_vec());
        let applied: Vec<(u32, String)> = MIGRATIONS
            .iter()
            .map(|m| (m.version, checksum(m.cql)))
            .collect();
        assert!(pending(&applied).unwrap().is_empty());
        // A version from a newer build is left alone.
        let mut newer = applied.clone();
        newer.push((999, "0".into()));
        assert!(pending(&newer).unwrap().is_empty());
        let edited = vec![(1, "0000000000000001".to_owned())];
        let err = pending(&edited).unwrap_err().to_string();
        assert!(err.contains("must not change"), "{err}");
    }

    #[test]
    fn keyspace_and_replication_are_checked_before_they_are_spliced() {
        assert!(check_keyspace("skald").is_ok());
        assert!(check_keyspace("skald_test_2").is_ok());
        for bad in [
            "",
            "2skald",
            "skald-x",
            "skald; DROP",
            "a\"b",
            &"k".repeat(49),
        ] {
            assert!(check_keyspace(bad).is_err(), "{bad}");
        }
        let default = "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}";
        assert!(check_replication(default).is_ok());
        assert!(
            check_replication("{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 3}").is_ok()
        );
        for bad in [
            "",
            "3",
            "{'replication_factor': 3}",
            "{'class': 'SimpleStrategy'}; DROP KEYSPACE x",
            "{'class': 'x'} -- ",
            "{'class': 'x'} AND durable_writes = false AND x = {",
        ] {
            assert!(check_replication(bad).is_err(), "{bad}");
        }
        assert_eq!(
            create_keyspace("skald", default, false),
            "CREATE KEYSPACE IF NOT EXISTS skald WITH replication = \
             {'class': 'NetworkTopologyStrategy', 'replication_factor': 3}"
        );
        assert_eq!(
            create_keyspace("skald", default, true),
            "CREATE KEYSPACE IF NOT EXISTS skald WITH replication = \
             {'class': 'NetworkTopologyStrategy', 'replication_factor': 3} \
             AND tablets = {'enabled': false}"
        );
    }

    #[test]
    fn alter_add_statements_name_their_columns() {
        assert_eq!(
            added_columns("ALTER TABLE messages ADD (checkpoint text, reasoning_tokens bigint)"),
            Some((
                "messages".into(),
                vec!["checkpoint".into(), "reasoning_tokens".into()]
            ))
        );
        assert_eq!(
            added_columns("alter table t add\n  c map<text, int>"),
            Some(("t".into(), vec!["c".into()]))
        );
        assert_eq!(
            added_columns("CREATE TABLE IF NOT EXISTS t (k text PRIMARY KEY)"),
            None
        );
        assert_eq!(
            added_columns("ALTER TABLE t WITH gc_grace_seconds = 1"),
            None
        );
        assert_eq!(added_columns("ALTER TABLE t DROP c"), None);
        // Every ALTER of the migrations is one this recognises, or a rerun
        // would trip on it.
        for m in MIGRATIONS {
            for statement in statements(m.cql) {
                if statement.to_ascii_uppercase().starts_with("ALTER") {
                    assert!(added_columns(&statement).is_some(), "{statement}");
                }
            }
        }
    }

    #[test]
    fn tablets_are_recognised_in_the_feature_list() {
        assert!(supports_tablets("CDC,LWT,TABLETS,UDA"));
        assert!(supports_tablets("TABLETS"));
        assert!(!supports_tablets("CDC,LWT,TABLETS_V2_IN_THE_FUTURE"));
        assert!(!supports_tablets(""));
    }
}
