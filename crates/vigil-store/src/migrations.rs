//! The schema migrations, embedded in the binary so a deployment carries no SQL files.
//!
//! Each migration is written once, in `migrations/NNNN_name.sql`, for every backend.
//! The backends share every table, column, key and constraint and differ only in how
//! two column types are spelt, so the files name those types by placeholder (`{bytes}`,
//! `{id}`) and [`run`] fills in the dialect's spelling ([`Dialect::BYTES`],
//! [`Dialect::ID_PRIMARY_KEY`]) before handing the SQL to sqlx's migrator.
//!
//! sqlx records applied versions and a checksum of each migration's SQL (as rendered)
//! in `_sqlx_migrations`, and refuses to open a database whose applied migration has
//! changed since; it also takes a lock while migrating, so replicas starting together
//! migrate once. An applied migration must therefore never be edited: a schema change
//! is a new file.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migrate, Migration, MigrationSource, MigrationType, Migrator};
use sqlx::Pool;

use crate::sql::Dialect;
use crate::StoreError;

/// (version, description, SQL with placeholders) of every migration, oldest first.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../migrations/0001_initial.sql")),
    (
        2,
        "engine state",
        include_str!("../migrations/0002_engine_state.sql"),
    ),
    (
        3,
        "failure file",
        include_str!("../migrations/0003_failure_file.sql"),
    ),
    (
        4,
        "pending notices",
        include_str!("../migrations/0004_pending_notices.sql"),
    ),
    (
        5,
        "hardware classes",
        include_str!("../migrations/0005_hardware_classes.sql"),
    ),
    (6, "events", include_str!("../migrations/0006_events.sql")),
    (
        7,
        "notice leases",
        include_str!("../migrations/0007_notice_leases.sql"),
    ),
    (
        8,
        "workload identity",
        include_str!("../migrations/0008_workload_identity.sql"),
    ),
    (
        9,
        "replica heartbeats",
        include_str!("../migrations/0009_replica_heartbeats.sql"),
    ),
];

/// A migration's SQL as dialect `D` spells it.
fn render<D: Dialect>(sql: &str) -> String {
    sql.replace("{bytes}", D::BYTES)
        .replace("{id}", D::ID_PRIMARY_KEY)
}

/// The migrations rendered for one dialect.
#[derive(Debug)]
struct Rendered(Vec<Migration>);

impl Rendered {
    fn new<D: Dialect>() -> Self {
        Self(
            MIGRATIONS
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Owned(render::<D>(sql)),
                        false,
                    )
                })
                .collect(),
        )
    }
}

impl<'s> MigrationSource<'s> for Rendered {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        Box::pin(async move { Ok(self.0) })
    }
}

/// Brings the schema of the database behind `pool` up to date.
pub(crate) async fn run<D: Dialect>(pool: &Pool<D>) -> Result<(), StoreError>
where
    D::Connection: Migrate,
{
    let migrate = |e| StoreError::Migrate(Box::new(e));
    Migrator::new(Rendered::new::<D>())
        .await
        .map_err(migrate)?
        .run(pool)
        .await
        .map_err(migrate)
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};
    use sqlx::{Postgres, Sqlite};

    use super::*;

    #[test]
    fn every_placeholder_is_spelt_on_every_backend() {
        for (_, _, sql) in MIGRATIONS {
            for rendered in [render::<Sqlite>(sql), render::<Postgres>(sql)] {
                assert!(!rendered.contains(['{', '}']), "{rendered}");
            }
        }
        let (_, _, initial) = MIGRATIONS[0];
        assert!(render::<Sqlite>(initial).contains("BLOB"));
        assert!(render::<Postgres>(initial).contains("BYTEA"));
    }

    /// Databases record each applied migration's checksum and refuse to open once it
    /// changes, so editing a released migration (or a dialect's spelling of it) must
    /// fail here first. A new migration adds its line.
    #[test]
    fn applied_migrations_never_change() {
        // (version, SHA-256 of the SQLite rendering, of the PostgreSQL rendering)
        const PINNED: &[(i64, &str, &str)] = &[
            (
                1,
                "b30273df191c7f61fa1bcd2393919f6f8c5bba88db912bfb82e185c582244f2d",
                "52965620942f85b48caf70278cc24cc615aaef5c7acd0fbd5dff206e2340c6b7",
            ),
            (
                2,
                "5beb9238e277c118973e98e749d5582092576dd7e265a5912cd8729645087733",
                "5beb9238e277c118973e98e749d5582092576dd7e265a5912cd8729645087733",
            ),
            (
                3,
                "ce446f2c66a59a7d83e70850a71c6455572ba3e29f585d7ee3c0fb97062762c8",
                "ce446f2c66a59a7d83e70850a71c6455572ba3e29f585d7ee3c0fb97062762c8",
            ),
            (
                4,
                "1e56aca7eec0f11ce2f3f5d2673f7b936ce5580ae0cf3f1b5f25fce34c30eb47",
                "793d8d5e8d7d38113528fb4d2b36cf872ae0a1b294664b59359b498991f9b0a8",
            ),
            (
                5,
                "efd2e84952c83f18ad0615571fa4da9dea9c7d8c186af009a66a8e872befc6d0",
                "efd2e84952c83f18ad0615571fa4da9dea9c7d8c186af009a66a8e872befc6d0",
            ),
            (
                6,
                "b15a1d922bb910f638e15d03bdc38f23908c07243e16d07c5e8028d1eb688e97",
                "2154d14da0ac16c2b8b517ce93025a23f51241c8000a7a6b79780dff10da7123",
            ),
            (
                7,
                "e1970507c48c9427c65b576881f6b572d89c18a4a2896a857768385786bffad3",
                "e1970507c48c9427c65b576881f6b572d89c18a4a2896a857768385786bffad3",
            ),
            (
                8,
                "0e180256f64020f6e3cd8e75f184886cb3c5a601b0de23967460daa74083ef5b",
                "0e180256f64020f6e3cd8e75f184886cb3c5a601b0de23967460daa74083ef5b",
            ),
            (
                9,
                "e73ba24c2ccd8165aa1e094a6834b09993c0a49fa84f0da36c0ae8d6275012eb",
                "e73ba24c2ccd8165aa1e094a6834b09993c0a49fa84f0da36c0ae8d6275012eb",
            ),
        ];
        let sha256 = |sql: String| hex::encode(Sha256::digest(sql));
        assert_eq!(PINNED.len(), MIGRATIONS.len(), "one line per migration");
        for (&(version, _, sql), &(pinned, sqlite, postgres)) in MIGRATIONS.iter().zip(PINNED) {
            assert_eq!(version, pinned);
            assert_eq!(
                sha256(render::<Sqlite>(sql)),
                sqlite,
                "migration {version}, SQLite"
            );
            assert_eq!(
                sha256(render::<Postgres>(sql)),
                postgres,
                "migration {version}, PostgreSQL"
            );
        }
    }
}
