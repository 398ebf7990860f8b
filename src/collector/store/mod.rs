//! Where the collector keeps alerts and sensors: one [`Store`] trait with a SQLite backend (the
//! embedded default) and a PostgreSQL one (for a fleet, and for several collectors at once).
//!
//! Both keep the same tables, created and upgraded by numbered migrations recorded in a
//! `schema_version` table. An alert is one row per `alert_id`: the record with the highest
//! `update` received so far (see [`plan`]); a batch of messages is one transaction. This module
//! owns what both backends share (the insert plan, filters, the incident and timeline queries);
//! each backend owns its connection and its dialect.

mod postgres;
mod sqlite;

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

/// The schema version that this build creates and expects.
pub const SCHEMA_VERSION: i64 = 2;

/// Alert ids listed per incident by [`Store::incidents`], newest first.
pub const INCIDENT_ALERT_IDS: u64 = 10;

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

/// One alert record as stored: the columns the API filters and groups on, and the original JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRow {
    pub alert_id: String,
    /// `update`: 0 for the alert itself, then 1, 2, ... for its updates (column `update_no`).
    pub update: i64,
    /// `final`: the alert's last record.
    pub is_final: bool,
    /// The record's own time (`timestamp`), µs since the epoch.
    pub ts_us: i64,
    /// When the collector received it: retention counts from here.
    pub received_us: i64,
    pub sensor_id: String,
    pub category: String,
    pub signature: String,
    /// The behaviour (`scan`, `flood`, ...), "" for alerts stored by schema version 1.
    pub class: String,
    pub severity: i64,
    pub score: f64,
    /// None when many sources share the behaviour (a flood).
    pub src_ip: Option<String>,
    pub src_port: Option<i64>,
    /// None when the behaviour went for many hosts (a scan).
    pub dest_ip: Option<String>,
    pub dest_port: Option<i64>,
    pub proto: String,
    /// Flows covered so far.
    pub count: i64,
    /// `first_seen` and `last_seen`, µs since the epoch.
    pub first_us: i64,
    pub last_us: i64,
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
        /// kernel_drops + queue_drops + shed_syns: packets the sensor did not look at.
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

/// What an address filter matches: one address, or the alerts that have none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddrFilter {
    Is(String),
    /// `*` in the API: no `src_ip` (many sources) or no `dest_ip` (many hosts).
    Absent,
}

impl AddrFilter {
    /// How the API and the incidents spell an absent address.
    pub const ABSENT: &'static str = "*";

    pub fn parse(text: &str) -> AddrFilter {
        if text == Self::ABSENT {
            AddrFilter::Absent
        } else {
            AddrFilter::Is(text.to_string())
        }
    }
}

/// Filters of `GET /api/alerts` and `GET /api/incidents` (all optional, combined with AND).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub sensor: Option<String>,
    pub category: Option<String>,
    pub class: Option<String>,
    pub severity: Option<i64>,
    pub src_ip: Option<AddrFilter>,
    pub dest_ip: Option<AddrFilter>,
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

/// One attacker, victim and class, with the alerts about them.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Incident {
    /// The attacker, or `*` when many sources share the behaviour.
    pub src_ip: String,
    /// The victim, or `*` when the behaviour went for many hosts.
    pub dest_ip: String,
    pub class: String,
    /// Alerts (distinct `alert_id`s).
    pub alerts: i64,
    /// Alerts whose last record is not final yet: the behaviour goes on.
    pub open: i64,
    /// The earliest `first_seen` and the latest `last_seen`, µs since the epoch.
    pub first_us: i64,
    pub last_us: i64,
    /// The highest severity (the lowest number: 1 high, 3 low).
    pub severity: i64,
    pub score: f64,
    /// Flows covered, summed over the alerts.
    pub count: i64,
    /// The newest alerts' ids (by record time), at most [`INCIDENT_ALERT_IDS`].
    pub alert_ids: Vec<String>,
}

impl Incident {
    /// The filter that selects this incident's alerts (within `outer`).
    pub fn filter(&self, outer: &Filter) -> Filter {
        Filter {
            src_ip: Some(AddrFilter::parse(&self.src_ip)),
            dest_ip: Some(AddrFilter::parse(&self.dest_ip)),
            class: Some(self.class.clone()),
            ..outer.clone()
        }
    }
}

/// A page of incidents, latest activity first, and how many match in all.
#[derive(Clone, Debug, PartialEq)]
pub struct IncidentPage {
    pub total: u64,
    pub incidents: Vec<Incident>,
}

/// Alerts per (time bucket, category).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Bucket {
    pub t_us: i64,
    pub category: String,
    pub count: i64,
}

/// How a batch went: every alert record counts once, in one of the three.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inserted {
    /// Records of an `alert_id` not stored before.
    pub new: u64,
    /// Records with a higher `update` than the stored one, which they replaced.
    pub updated: u64,
    /// Records with an `update` stored already, or older than the stored one: nothing changed.
    pub duplicate: u64,
}

/// What one alert record does to the stored row of its `alert_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    New,
    Updated,
    Duplicate,
}

impl Outcome {
    /// A record with `update` against the highest update stored so far for its `alert_id`.
    pub fn of(stored: Option<i64>, update: i64) -> Outcome {
        match stored {
            None => Outcome::New,
            Some(s) if update > s => Outcome::Updated,
            Some(_) => Outcome::Duplicate,
        }
    }
}

impl Inserted {
    fn count(&mut self, outcome: Outcome) {
        *self.slot(outcome) += 1;
    }

    /// Moves one record from `planned` to `actual` (a race with another collector).
    pub(crate) fn correct(&mut self, planned: Outcome, actual: Outcome) {
        if planned != actual {
            let slot = self.slot(planned);
            *slot = slot.saturating_sub(1);
            self.count(actual);
        }
    }

    fn slot(&mut self, outcome: Outcome) -> &mut u64 {
        match outcome {
            Outcome::New => &mut self.new,
            Outcome::Updated => &mut self.updated,
            Outcome::Duplicate => &mut self.duplicate,
        }
    }
}

/// The row a batch writes for one `alert_id`.
#[derive(Debug, PartialEq)]
pub(crate) struct Write<'a> {
    /// The batch's record with the highest update (the first of equals).
    pub row: &'a AlertRow,
    /// Whether the alert was stored before the batch: what the write is expected to do
    /// (update rather than insert).
    pub existed: bool,
}

impl Write<'_> {
    /// The outcome counted for this write's alert_id that a concurrent writer could change.
    pub fn planned(&self) -> Outcome {
        if self.existed {
            Outcome::Updated
        } else {
            Outcome::New
        }
    }
}

/// What a batch does to the alerts table.
#[derive(Debug, PartialEq)]
pub(crate) struct Plan<'a> {
    /// One per `alert_id` that changes, in `alert_id` order (every writer takes rows in this
    /// order, so two collectors never deadlock).
    pub writes: Vec<Write<'a>>,
    pub counts: Inserted,
}

/// Plans a batch given the update stored for each of its `alert_id`s (absent: not stored).
///
/// The records count in the order they came, each against the highest update stored so far
/// (before the batch or earlier in it), so the counts do not depend on how messages are split
/// into batches: update 1 then update 0 of a new alert is one new and one duplicate.
pub(crate) fn plan<'a>(alerts: &'a [AlertRow], stored: &HashMap<String, i64>) -> Plan<'a> {
    // alert_id -> (highest update so far, the batch's record holding it when it is to be written)
    let mut current: HashMap<&str, (i64, Option<&AlertRow>)> = HashMap::new();
    let mut counts = Inserted::default();
    for a in alerts {
        let id = a.alert_id.as_str();
        let so_far = current
            .get(id)
            .map(|(u, _)| *u)
            .or_else(|| stored.get(id).copied());
        let outcome = Outcome::of(so_far, a.update);
        counts.count(outcome);
        if outcome != Outcome::Duplicate {
            current.insert(id, (a.update, Some(a)));
        }
    }
    let mut writes: Vec<Write> = current
        .into_values()
        .filter_map(|(_, row)| row)
        .map(|row| Write {
            row,
            existed: stored.contains_key(&row.alert_id),
        })
        .collect();
    writes.sort_by(|a, b| a.row.alert_id.cmp(&b.row.alert_id));
    Plan { writes, counts }
}

/// The distinct `alert_id`s of a batch, sorted.
pub(crate) fn batch_ids(alerts: &[AlertRow]) -> Vec<&str> {
    let mut ids: Vec<&str> = alerts.iter().map(|a| a.alert_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The stored alert columns in insert order; `ALERT_COLUMNS[0]` is the conflict key.
pub(crate) const ALERT_COLUMNS: [&str; 20] = [
    "alert_id",
    "update_no",
    "final",
    "ts_us",
    "received_us",
    "sensor_id",
    "category",
    "signature",
    "class",
    "severity",
    "score",
    "src_ip",
    "src_port",
    "dest_ip",
    "dest_port",
    "proto",
    "count",
    "first_us",
    "last_us",
    "body",
];

/// `INSERT INTO alerts (...) <values> ON CONFLICT (alert_id) DO UPDATE ...`: a record replaces
/// the stored row of its alert_id only when its update is higher. `excluded` is how the dialect
/// names the proposed row (both accept `excluded`).
pub(crate) fn upsert_sql(values: &str) -> String {
    let set: Vec<String> = ALERT_COLUMNS[1..]
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO alerts ({}) {values} ON CONFLICT (alert_id) DO UPDATE SET {} \
         WHERE alerts.update_no < excluded.update_no",
        ALERT_COLUMNS.join(", "),
        set.join(", ")
    )
}

/// Opens a store; `migrate` creates or upgrades the schema first (the writer does it once at
/// start-up, before any reader opens).
pub fn open(url: &DbUrl, migrate: bool) -> Result<Box<dyn Store>, StoreError> {
    Ok(match url {
        DbUrl::Sqlite(path) => Box::new(sqlite::SqliteStore::open(path, migrate)?),
        DbUrl::Postgres(url) => Box::new(postgres::PgStore::open(url, migrate)?),
    })
}

/// The collector's storage. Each thread opens its own (a connection is not shared).
pub trait Store: Send {
    /// Stores the alert records (a new `alert_id` is inserted, a higher `update` replaces the
    /// stored row, anything else changes nothing) and applies the sensor updates, all in one
    /// transaction: on error nothing of the batch is stored.
    fn insert(
        &mut self,
        alerts: &[AlertRow],
        sensors: &[SensorUpdate],
    ) -> Result<Inserted, StoreError>;
    fn alerts(&mut self, f: &Filter, limit: u64, offset: u64) -> Result<AlertPage, StoreError>;
    fn alert(&mut self, alert_id: &str) -> Result<Option<String>, StoreError>;
    /// Alerts grouped by (src_ip, dest_ip, class), the latest activity first.
    fn incidents(
        &mut self,
        f: &Filter,
        limit: u64,
        offset: u64,
    ) -> Result<IncidentPage, StoreError>;
    fn sensors(&mut self) -> Result<Vec<Sensor>, StoreError>;
    /// Alerts per bucket of `bucket_us` and category, and the bucket size chosen when None.
    fn timeline(
        &mut self,
        f: &Filter,
        bucket_us: Option<i64>,
    ) -> Result<(i64, Vec<Bucket>), StoreError>;
    /// Deletes alerts received before `received_before_us`, then the least recently received
    /// beyond `max_rows`; returns how many went.
    fn prune(
        &mut self,
        received_before_us: Option<i64>,
        max_rows: Option<u64>,
    ) -> Result<u64, StoreError>;
    /// A cheap query, for `/healthz`.
    fn ping(&mut self) -> Result<(), StoreError>;
}

/// A bound value of a filter.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Param {
    Int(i64),
    Text(String),
}

/// `WHERE ...` (or "") for `f`, with placeholders from `ph(n)` (1-based) and the values to bind.
pub(crate) fn where_clause(f: &Filter, ph: impl Fn(usize) -> String) -> (String, Vec<Param>) {
    // (column, operator, the value compared with, if any)
    let mut conditions: Vec<(&str, &str, Option<Param>)> = Vec::new();
    if let Some(v) = &f.sensor {
        conditions.push(("sensor_id", "=", Some(Param::Text(v.clone()))));
    }
    if let Some(v) = &f.category {
        conditions.push(("category", "=", Some(Param::Text(v.clone()))));
    }
    if let Some(v) = &f.class {
        conditions.push(("class", "=", Some(Param::Text(v.clone()))));
    }
    if let Some(v) = f.severity {
        conditions.push(("severity", "=", Some(Param::Int(v))));
    }
    for (column, addr) in [("src_ip", &f.src_ip), ("dest_ip", &f.dest_ip)] {
        match addr {
            Some(AddrFilter::Is(v)) => conditions.push((column, "=", Some(Param::Text(v.clone())))),
            Some(AddrFilter::Absent) => conditions.push((column, "IS NULL", None)),
            None => {}
        }
    }
    if let Some(v) = f.since_us {
        conditions.push(("ts_us", ">=", Some(Param::Int(v))));
    }
    if let Some(v) = f.until_us {
        conditions.push(("ts_us", "<", Some(Param::Int(v))));
    }
    let mut params = Vec::new();
    let mut clauses = Vec::new();
    for (column, op, value) in conditions {
        match value {
            Some(p) => {
                params.push(p);
                clauses.push(format!("{column} {op} {}", ph(params.len())));
            }
            None => clauses.push(format!("{column} {op}")),
        }
    }
    if clauses.is_empty() {
        (String::new(), params)
    } else {
        (format!("WHERE {}", clauses.join(" AND ")), params)
    }
}

/// The page of incidents for `clause`, columns in [`Incident`]'s order (the alert ids apart); `limit` and
/// `offset` are the placeholders of the two values bound after the filter's. Groups are
/// ordered by their latest activity, then by their key, so pages never overlap.
pub(crate) fn incidents_sql(clause: &str, limit: &str, offset: &str) -> String {
    format!(
        "SELECT src_ip, dest_ip, class, count(*), \
         sum(CASE WHEN final THEN 0 ELSE 1 END), min(first_us), max(last_us), min(severity), \
         max(score), CAST(sum(count) AS BIGINT) \
         FROM alerts {clause} GROUP BY src_ip, dest_ip, class \
         ORDER BY max(last_us) DESC, class, src_ip, dest_ip LIMIT {limit} OFFSET {offset}"
    )
}

/// How many incidents match `clause`.
pub(crate) fn incident_count_sql(clause: &str) -> String {
    format!(
        "SELECT count(*) FROM (SELECT 1 FROM alerts {clause} GROUP BY src_ip, dest_ip, class) g"
    )
}

/// An incident's address as stored (`NULL`: many) as the API gives it.
pub(crate) fn addr_or_absent(a: Option<String>) -> String {
    a.unwrap_or_else(|| AddrFilter::ABSENT.to_string())
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

/// Alert rows for the backends' tests: `id` in hex as the alert_id, scan or flood by parity.
#[cfg(test)]
pub(crate) fn test_row(id: u32, update: i64, ts_us: i64, received_us: i64) -> AlertRow {
    AlertRow {
        alert_id: format!("{id:032x}"),
        update,
        is_final: false,
        ts_us,
        received_us,
        sensor_id: "r1".into(),
        category: "c".into(),
        signature: "s".into(),
        class: if id.is_multiple_of(2) {
            "scan"
        } else {
            "flood"
        }
        .into(),
        severity: 2,
        score: 0.5,
        src_ip: id.is_multiple_of(2).then(|| "10.0.0.1".to_string()),
        src_port: None,
        dest_ip: Some("10.0.0.2".into()),
        dest_port: Some(80),
        proto: "TCP".into(),
        count: 1 + update,
        first_us: ts_us,
        last_us: ts_us + update,
        body: format!("{{\"alert_id\":\"{id:032x}\",\"update\":{update}}}"),
    }
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
            src_ip: Some(AddrFilter::Absent),
            dest_ip: Some(AddrFilter::parse("10.0.0.2")),
            since_us: Some(5),
            ..Filter::default()
        };
        let (sql, params) = where_clause(&f, |n| format!("${n}"));
        assert_eq!(
            sql,
            "WHERE sensor_id = $1 AND severity = $2 AND src_ip IS NULL AND dest_ip = $3 \
             AND ts_us >= $4"
        );
        assert_eq!(params.len(), 4);
        assert_eq!(where_clause(&Filter::default(), |_| "?".into()).0, "");
        assert_eq!(bucket_for(3_600_000_000), 60_000_000);
    }

    #[test]
    fn records_count_in_arrival_order_against_the_highest_update_so_far() {
        let r = |id, update| test_row(id, update, 0, 0);
        // Alert 1 is new: updates 1, 0, 2, 2 come; alert 2 is stored at update 3.
        let batch = [r(1, 1), r(1, 0), r(2, 2), r(1, 2), r(2, 4), r(1, 2)];
        let stored = HashMap::from([(format!("{:032x}", 2), 3)]);
        let p = plan(&batch, &stored);
        assert_eq!(
            p.counts,
            Inserted {
                new: 1,
                updated: 2,
                duplicate: 3
            }
        );
        let writes: Vec<(&str, i64, bool)> = p
            .writes
            .iter()
            .map(|w| (w.row.alert_id.as_str(), w.row.update, w.existed))
            .collect();
        assert_eq!(
            writes,
            [
                (batch[0].alert_id.as_str(), 2, false),
                (batch[2].alert_id.as_str(), 4, true)
            ]
        );
        // The same records one per batch count the same.
        let mut stored = stored;
        let mut counts = Inserted::default();
        for a in &batch {
            let p = plan(std::slice::from_ref(a), &stored);
            for w in &p.writes {
                stored.insert(w.row.alert_id.clone(), w.row.update);
            }
            counts.new += p.counts.new;
            counts.updated += p.counts.updated;
            counts.duplicate += p.counts.duplicate;
        }
        assert_eq!(counts, p.counts);
        // Nothing to write for a batch of resends.
        assert!(
            plan(&[r(2, 3)], &HashMap::from([(format!("{:032x}", 2), 3)]))
                .writes
                .is_empty()
        );
    }

    #[test]
    fn a_race_moves_one_count() {
        let mut c = Inserted {
            new: 2,
            updated: 0,
            duplicate: 0,
        };
        c.correct(Outcome::New, Outcome::Duplicate);
        c.correct(Outcome::Updated, Outcome::Updated);
        assert_eq!(
            c,
            Inserted {
                new: 1,
                updated: 0,
                duplicate: 1
            }
        );
    }
}
