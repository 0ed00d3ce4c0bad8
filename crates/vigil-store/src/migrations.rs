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
