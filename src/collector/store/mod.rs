//! Where the collector keeps alerts and sensors: one [`Store`] trait with a SQLite backend (the
//! embedded default) and a PostgreSQL one (for a fleet, and for several collectors at once).
//!
//! Both keep the same tables, created and upgraded by numbered migrations recorded in a
//! `schema_version` table. Alerts are inserted idempotently by `alert_id`; a batch of messages is
//! one transaction. This module owns the SQL that both backends share (filters, the timeline);
//! each backend owns its connection and its dialect.

mod postgres;
mod sqlite;

use std::fmt;

use serde::Serialize;

/// The schema version that this build creates and expects.
pub const SCHEMA_VERSION: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("db {0:?}: expected sqlite:PATH or postgres://user[:password]@host[:port]/dbname")]
    Url(String),
    #[error("SQLite {context}: {source}")]
    Sqlite {
        context: String,
        source: rusqlite::Error,
    },
    #[error("PostgreSQL {context}: {source}")]
    Postgres {
        context: String,
        source: ::postgres::Error,
    },
    #[error(
        "the database has schema version {found}, newer than this collector's {SCHEMA_VERSION}: \
         run a newer edgewatch-collector"
    )]
    TooNew { found: i64 },
}

/// `db` / `--db`: which backend and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbUrl {
    Sqlite(String),
    Postgres(String),
}

impl DbUrl {
    pub fn parse(url: &str) -> Result<DbUrl, StoreError> {
        if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::Url(url.to_string()));
            }
            Ok(DbUrl::Sqlite(path.to_string()))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DbUrl::Postgres(url.to_string()))
        } else {
            Err(StoreError::Url(url.to_string()))
        }
    }
}

impl fmt::Display for DbUrl {
    /// Never shows a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbUrl::Sqlite(path) => write!(f, "sqlite:{path}"),
            DbUrl::Postgres(url) => {
                let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
                match rest.split_once('@') {
                    Some((user, host)) => {
                        let user = user.split(':').next().unwrap_or("");
                        write!(f, "postgres://{user}@{host}")
                    }
                    None => write!(f, "postgres://{rest}"),
                }
            }
        }
    }
}

/// One alert as stored: the columns the API filters on, and the original JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRow {
    pub alert_id: String,
    /// The alert's own time (`timestamp`), µs since the epoch.
    pub ts_us: i64,
    /// When the collector received it: retention counts from here.
    pub received_us: i64,
    pub sensor_id: String,
    pub category: String,
    pub signature: String,
    pub severity: i64,
    pub score: f64,
    pub src_ip: String,
    pub src_port: Option<i64>,
    pub dest_ip: String,
    pub dest_port: Option<i64>,
    pub proto: String,
    pub count: i64,
    /// The payload exactly as received.
    pub body: String,
}

/// What a status or stats message says about its sensor.
#[derive(Clone, Debug, PartialEq)]
pub enum SensorUpdate {
    Status {
        sensor_id: String,
        online: bool,
        version: String,
        model: String,
        mode: String,
        started: String,
        at_us: i64,
    },
    Stats {
        sensor_id: String,
        packets: i64,
        /// kernel_drops + queue_drops.
        drops: i64,
        outbox_depth: i64,
        alerts_published: i64,
        uptime_s: i64,
        body: String,
        at_us: i64,
    },
}

/// A sensor as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Sensor {
    pub sensor_id: String,
    /// "online", "offline" or "unknown" (stats or alerts seen, no status yet).
    pub status: String,
    pub version: String,
    pub model: String,
    pub mode: String,
    pub started: String,
    /// Last message of any kind from this sensor, µs since the epoch.
    pub last_seen_us: i64,
    pub packets: i64,
    pub drops: i64,
    pub outbox_depth: i64,
    pub alerts_published: i64,
    pub uptime_s: i64,
    /// The last stats message, as received (null before the first).
    pub stats: Option<serde_json::Value>,
}

/// Filters of `GET /api/alerts` (all optional, combined with AND).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub sensor: Option<String>,
    pub category: Option<String>,
    pub severity: Option<i64>,
    pub src_ip: Option<String>,
    pub dest_ip: Option<String>,
    /// Alert time range, µs since the epoch: since <= ts < until.
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
}

/// A page of alerts, newest first, and how many match in all.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertPage {
    pub total: u64,
    /// The original JSON of each alert.
    pub alerts: Vec<String>,
}

/// Alerts per (time bucket, category).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Bucket {
    pub t_us: i64,
    pub category: String,
    pub count: i64,
}

/// How a batch went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inserted {
    pub new: u64,
    pub duplicate: u64,
}

/// The collector's storage. Each thread opens its own (a connection is not shared).
pub trait Store: Send {
    /// Inserts the alerts (skipping `alert_id`s already stored) and applies the sensor updates,
    /// all in one transaction: on error nothing of the batch is stored.
    fn insert(
        &mut self,
        alerts: &[AlertRow],
        sensors: &[SensorUpdate],
    ) -> Result<Inserted, StoreError>;
    fn alerts(&mut self, f: &Filter, limit: u64, offset: u64) -> Result<AlertPage, StoreError>;
    fn alert(&mut self, alert_id: &str) -> Result<Option<String>, StoreError>;
    fn sensors(&mut self) -> Result<Vec<Sensor>, StoreError>;
    /// Alerts per bucket of `bucket_us` and category, and the bucket size chosen when None.
    fn timeline(
        &mut self,
        f: &Filter,
        bucket_us: Option<i64>,
    ) -> Result<(i64, Vec<Bucket>), StoreError>;
    /// Deletes alerts received before `received_before_us`, then the oldest received beyond
    /// `max_rows`; returns how many went.
    fn prune(
        &mut self,
        received_before_us: Option<i64>,
        max_rows: Option<u64>,
    ) -> Result<u64, StoreError>;
    /// A cheap query, for `/healthz`.
    fn ping(&mut self) -> Result<(), StoreError>;
}

/// Opens a store; `migrate` creates or upgrades the schema first (the writer does it once at
/// start-up, before any reader opens).
pub fn open(url: &DbUrl, migrate: bool) -> Result<Box<dyn Store>, StoreError> {
    Ok(match url {
        DbUrl::Sqlite(path) => Box::new(sqlite::SqliteStore::open(path, migrate)?),
        DbUrl::Postgres(url) => Box::new(postgres::PgStore::open(url, migrate)?),
    })
}

/// A bound value of a filter.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Param {
    Int(i64),
    Text(String),
}

/// `WHERE ...` (or "") for `f`, with placeholders from `ph(n)` (1-based) and the values to bind.
pub(crate) fn where_clause(f: &Filter, ph: impl Fn(usize) -> String) -> (String, Vec<Param>) {
    let mut clauses = Vec::new();
    let mut params = Vec::new();
    let mut add = |column: &str, op: &str, p: Param| {
        params.push(p);
        clauses.push(format!("{column} {op} {}", ph(params.len())));
    };
    if let Some(v) = &f.sensor {
        add("sensor_id", "=", Param::Text(v.clone()));
    }
    if let Some(v) = &f.category {
        add("category", "=", Param::Text(v.clone()));
    }
    if let Some(v) = f.severity {
        add("severity", "=", Param::Int(v));
    }
    if let Some(v) = &f.src_ip {
        add("src_ip", "=", Param::Text(v.clone()));
    }
    if let Some(v) = &f.dest_ip {
        add("dest_ip", "=", Param::Text(v.clone()));
    }
    if let Some(v) = f.since_us {
        add("ts_us", ">=", Param::Int(v));
    }
    if let Some(v) = f.until_us {
        add("ts_us", "<", Param::Int(v));
    }
    if clauses.is_empty() {
        (String::new(), params)
    } else {
        (format!("WHERE {}", clauses.join(" AND ")), params)
    }
}

/// A round bucket size giving at most about 60 bars over `span_us`.
pub(crate) fn bucket_for(span_us: i64) -> i64 {
    const STEPS_S: [i64; 14] = [
        1, 5, 10, 30, 60, 300, 600, 1800, 3600, 10800, 21600, 43200, 86400, 604800,
    ];
    let want = (span_us.max(0) + 59) / 60;
    for s in STEPS_S {
        if s * 1_000_000 >= want {
            return s * 1_000_000;
        }
    }
    (want / 604_800_000_000 + 1) * 604_800_000_000
}

/// Now, µs since the epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_urls() {
        assert_eq!(
            DbUrl::parse("sqlite:/tmp/a.db").unwrap(),
            DbUrl::Sqlite("/tmp/a.db".into())
        );
        let pg = DbUrl::parse("postgres://ew:secret@db:5432/ew").unwrap();
        assert_eq!(pg.to_string(), "postgres://ew@db:5432/ew");
        assert!(DbUrl::parse("mysql://x").is_err());
        assert!(DbUrl::parse("sqlite:").is_err());
    }

    #[test]
    fn filters_become_one_where_clause() {
        let f = Filter {
            sensor: Some("r1".into()),
            severity: Some(1),
            since_us: Some(5),
            ..Filter::default()
        };
        let (sql, params) = where_clause(&f, |n| format!("${n}"));
        assert_eq!(
            sql,
            "WHERE sensor_id = $1 AND severity = $2 AND ts_us >= $3"
        );
        assert_eq!(params.len(), 3);
        assert_eq!(where_clause(&Filter::default(), |_| "?".into()).0, "");
        assert_eq!(bucket_for(3_600_000_000), 60_000_000);
    }
}
