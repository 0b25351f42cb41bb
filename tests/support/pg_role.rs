//! A PostgreSQL login role and schema of a test's own, so the test can lock
//! the store out (ALTER ROLE … NOLOGIN, terminate its connections) without
//! touching other tests' data.

use muhurat::store::testing;
use sqlx::Connection;

/// A role `PREFIX_<random>` with a schema of its own: (role, database URL).
pub async fn own_role(prefix: &str) -> (String, String) {
    sqlx::any::install_default_drivers();
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let role = format!("{prefix}_{tag}");
    let mut admin = sqlx::AnyConnection::connect(&testing::pg_base())
        .await
        .expect("PostgreSQL for tests must be running (see README)");
    for q in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("CREATE SCHEMA {role} AUTHORIZATION {role}"),
    ] {
        sqlx::query(&q).execute(&mut admin).await.unwrap();
    }
    let base = testing::pg_base();
    let after_scheme = base.split_once("://").map(|x| x.1).unwrap_or(&base);
    let host_and_db = after_scheme.split_once('@').map_or(after_scheme, |x| x.1);
    (
        role.clone(),
        format!("postgres://{role}@{host_and_db}?options=-c%20search_path%3D{role}"),
    )
}
