//! The schema migrations, embedded in the binary so a deployment carries no SQL files.
//!
//! One directory per backend (`migrations/sqlite`, `migrations/postgres`) with the same
//! versions and the same logical schema; only the column types are spelt per dialect.
//! sqlx records applied versions and checksums in `_sqlx_migrations` and takes a lock
//! while migrating, so replicas starting together migrate once.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use crate::StoreError;

/// (version, description, SQL) of every migration, oldest first.
type Embedded = &'static [(i64, &'static str, &'static str)];

pub(crate) const SQLITE: Embedded = &[(
    1,
    "initial",
    include_str!("../migrations/sqlite/0001_initial.sql"),
)];

pub(crate) const POSTGRES: Embedded = &[(
    1,
    "initial",
    include_str!("../migrations/postgres/0001_initial.sql"),
)];

#[derive(Debug)]
struct Source(Embedded);

impl<'s> MigrationSource<'s> for Source {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// The migrator for one backend's embedded migrations.
pub(crate) async fn migrator(embedded: Embedded) -> Result<Migrator, StoreError> {
    Migrator::new(Source(embedded))
        .await
        .map_err(|e| StoreError::Migrate(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spells a PostgreSQL migration the SQLite way and drops comments, so the two
    /// directories can be compared: they must differ only in type spelling.
    fn normalise(sql: &str, from_postgres: bool) -> String {
        let sql = if from_postgres {
            sql.replace("BYTEA", "BLOB").replace(
                "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
                "INTEGER PRIMARY KEY AUTOINCREMENT",
            )
        } else {
            sql.to_owned()
        };
        sql.lines()
            .map(|l| l.split("--").next().unwrap_or("").trim_end())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn both_backends_have_the_same_logical_schema() {
        assert_eq!(SQLITE.len(), POSTGRES.len());
        for (s, p) in SQLITE.iter().zip(POSTGRES) {
            assert_eq!((s.0, s.1), (p.0, p.1), "same versions and descriptions");
            assert_eq!(
                normalise(s.2, false),
                normalise(p.2, true),
                "migration {}",
                s.0
            );
        }
    }
}
