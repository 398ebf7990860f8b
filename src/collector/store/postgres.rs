//! The PostgreSQL backend (the synchronous `postgres` client, no TLS: keep the database on the
//! collectors' private network or a Unix socket). Several collectors may share one database:
//! every write keeps the highest `update` of an `alert_id` whoever stores it, and migrations
//! take an advisory lock so that collectors starting together upgrade the schema once.

use std::collections::HashMap;

use postgres::types::ToSql;
use postgres::{Client, NoTls, Transaction};

use super::{
    AlertPage, AlertRow, Bucket, Filter, INCIDENT_ALERT_IDS, Incident, IncidentPage, Inserted,
    Outcome, Param, SCHEMA_VERSION, Sensor, SensorUpdate, Store, StoreError, Write, addr_or_absent,
    batch_ids, bucket_for, incident_count_sql, incidents_sql, plan, upsert_sql, where_clause,
};

/// Migration n (1-based) takes the schema from version n-1 to n. Each runs in the transaction
/// that records its version, so a failed one leaves the database as it was.
const MIGRATIONS: [&str; 2] = [
    r#"
CREATE TABLE alerts (
    seq BIGSERIAL PRIMARY KEY,
    alert_id TEXT NOT NULL UNIQUE,
    ts_us BIGINT NOT NULL,
    received_us BIGINT NOT NULL,
    sensor_id TEXT NOT NULL,
    category TEXT NOT NULL,
    signature TEXT NOT NULL,
    severity BIGINT NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    src_ip TEXT NOT NULL,
    src_port BIGINT,
    dest_ip TEXT NOT NULL,
    dest_port BIGINT,
    proto TEXT NOT NULL,
    count BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX alerts_ts ON alerts (ts_us);
CREATE INDEX alerts_sensor_ts ON alerts (sensor_id, ts_us);
CREATE INDEX alerts_category_ts ON alerts (category, ts_us);
CREATE INDEX alerts_src_ts ON alerts (src_ip, ts_us);
CREATE INDEX alerts_dest_ts ON alerts (dest_ip, ts_us);
CREATE INDEX alerts_received ON alerts (received_us);
CREATE TABLE sensors (
    sensor_id TEXT PRIMARY KEY,
    status TEXT NOT NULL DEFAULT 'unknown',
    version TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    mode TEXT NOT NULL DEFAULT '',
    started TEXT NOT NULL DEFAULT '',
    last_seen_us BIGINT NOT NULL DEFAULT 0,
    packets BIGINT NOT NULL DEFAULT 0,
    drops BIGINT NOT NULL DEFAULT 0,
    outbox_depth BIGINT NOT NULL DEFAULT 0,
    alerts_published BIGINT NOT NULL DEFAULT 0,
    uptime_s BIGINT NOT NULL DEFAULT 0,
    stats TEXT
);
"#,
    // Version 2: one row per alert and its updates (update_no, final), the behaviour (class),
    // the episode's times, and addresses that may be absent. A version 1 row is one complete
    // record: update 0, final, its class from the signature ("EDGEWATCH anomalous traffic:
    // <class>"), its episode at its own time. The UPDATE rewrites every row once.
    r#"
ALTER TABLE alerts
    ALTER COLUMN src_ip DROP NOT NULL,
    ALTER COLUMN dest_ip DROP NOT NULL,
    ADD COLUMN update_no BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN final BOOLEAN NOT NULL DEFAULT TRUE,
    ADD COLUMN class TEXT NOT NULL DEFAULT '',
    ADD COLUMN first_us BIGINT,
    ADD COLUMN last_us BIGINT;
UPDATE alerts SET first_us = ts_us, last_us = ts_us,
    class = CASE WHEN signature LIKE 'EDGEWATCH anomalous traffic: %'
                 THEN substr(signature, length('EDGEWATCH anomalous traffic: ') + 1) ELSE '' END;
ALTER TABLE alerts
    ALTER COLUMN update_no DROP DEFAULT,
    ALTER COLUMN final DROP DEFAULT,
    ALTER COLUMN class DROP DEFAULT,
    ALTER COLUMN first_us SET NOT NULL,
    ALTER COLUMN last_us SET NOT NULL;
CREATE INDEX alerts_incident ON alerts (src_ip, dest_ip, class, ts_us);
"#,
];

/// The rows a batch writes, column by column, in `ALERT_COLUMNS` order.
#[derive(Default)]
struct Columns<'a> {
    alert_id: Vec<&'a str>,
    update: Vec<i64>,
    is_final: Vec<bool>,
    ts_us: Vec<i64>,
    received_us: Vec<i64>,
    sensor_id: Vec<&'a str>,
    category: Vec<&'a str>,
    signature: Vec<&'a str>,
    class: Vec<&'a str>,
    severity: Vec<i64>,
    score: Vec<f64>,
    src_ip: Vec<Option<&'a str>>,
    src_port: Vec<Option<i64>>,
    dest_ip: Vec<Option<&'a str>>,
    dest_port: Vec<Option<i64>>,
    proto: Vec<&'a str>,
    count: Vec<i64>,
    first_us: Vec<i64>,
    last_us: Vec<i64>,
    body: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    fn of(writes: &[Write<'a>]) -> Columns<'a> {
        let mut c = Columns::default();
        for w in writes {
            let a: &'a AlertRow = w.row;
            c.alert_id.push(&a.alert_id);
            c.update.push(a.update);
            c.is_final.push(a.is_final);
            c.ts_us.push(a.ts_us);
            c.received_us.push(a.received_us);
            c.sensor_id.push(&a.sensor_id);
            c.category.push(&a.category);
            c.signature.push(&a.signature);
            c.class.push(&a.class);
            c.severity.push(a.severity);
            c.score.push(a.score);
            c.src_ip.push(a.src_ip.as_deref());
            c.src_port.push(a.src_port);
            c.dest_ip.push(a.dest_ip.as_deref());
            c.dest_port.push(a.dest_port);
            c.proto.push(&a.proto);
            c.count.push(a.count);
            c.first_us.push(a.first_us);
            c.last_us.push(a.last_us);
            c.body.push(&a.body);
        }
        c
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 20] {
        [
            &self.alert_id,
            &self.update,
            &self.is_final,
            &self.ts_us,
            &self.received_us,
            &self.sensor_id,
            &self.category,
            &self.signature,
            &self.class,
            &self.severity,
            &self.score,
            &self.src_ip,
            &self.src_port,
            &self.dest_ip,
            &self.dest_port,
            &self.proto,
            &self.count,
            &self.first_us,
            &self.last_us,
            &self.body,
        ]
    }
}

/// The arrays of [`Columns::params`] as rows (one statement for the whole batch, so a batch
/// costs one round trip).
const UNNEST: &str = "SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bool[], \
    $4::bigint[], $5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], \
    $11::float8[], $12::text[], $13::bigint[], $14::text[], $15::bigint[], $16::text[], \
    $17::bigint[], $18::bigint[], $19::bigint[], $20::text[])";

/// Any number: the key of the advisory lock that serializes migrations.
const MIGRATION_LOCK: i64 = 0x6564_6765_7761_7463;

pub struct PgStore {
    url: String,
    client: Client,
}

fn err(context: &str) -> impl FnOnce(postgres::Error) -> StoreError + '_ {
    move |source| StoreError::Postgres {
        context: context.to_string(),
        source,
    }
}

fn bind(params: Vec<Param>) -> Vec<Box<dyn ToSql + Sync>> {
    params
        .into_iter()
        .map(|p| -> Box<dyn ToSql + Sync> {
            match p {
                Param::Int(v) => Box::new(v),
                Param::Text(v) => Box::new(v),
            }
        })
        .collect()
}

/// A page's limit or offset as PostgreSQL's bigint.
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn refs(values: &[Box<dyn ToSql + Sync>]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|b| b.as_ref()).collect()
}

impl PgStore {
    pub fn open(url: &str, migrate: bool) -> Result<PgStore, StoreError> {
        let client = Client::connect(url, NoTls).map_err(err("connect"))?;
        let mut store = PgStore {
            url: url.to_string(),
            client,
        };
        if migrate {
            store.migrate()?;
        }
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let mut tx = self.client.transaction().map_err(err("migration"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(err("migration"))?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .map_err(err("migration"))?;
        let found: i64 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
            .map_err(err("migration"))?
            .get(0);
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew { found });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.batch_execute(sql).map_err(err("migration"))?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&(i as i64 + 1)],
            )
            .map_err(err("migration"))?;
        }
        tx.commit().map_err(err("migration"))
    }

    /// `column` of the alerts matching `f`, newest first.
    fn newest(
        &mut self,
        column: &str,
        f: &Filter,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<String>, StoreError> {
        let (clause, params) = where_clause(f, |n| format!("${n}"));
        let mut values = bind(params);
        let n = values.len();
        values.push(Box::new(clamp(limit)));
        values.push(Box::new(clamp(offset)));
        let sql = format!(
            "SELECT {column} FROM alerts {clause} ORDER BY ts_us DESC, seq DESC \
             LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let rows = self
            .client
            .query(&sql, &refs(&values))
            .map_err(err("query"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// A new connection when the old one died (database restarted, network cut).
    fn reconnect_if_closed(&mut self) -> Result<(), StoreError> {
        if self.client.is_closed() {
            self.client = Client::connect(&self.url, NoTls).map_err(err("reconnect"))?;
        }
        Ok(())
    }
}

/// The update stored for each of `ids` that is stored.
fn stored_updates(tx: &mut Transaction, ids: &[&str]) -> Result<HashMap<String, i64>, StoreError> {
    let rows = tx
        .query(
            "SELECT alert_id, update_no FROM alerts WHERE alert_id = ANY($1)",
            &[&ids],
        )
        .map_err(err("insert"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Writes the batch's alert records in one statement. What `stored_updates` read may change
/// before the upsert (another collector storing the same alert_id at the same moment): the
/// upsert's own guard keeps the highest update whatever happens, and what it reports doing
/// (`xmax = 0`: inserted) corrects the planned counts.
fn write_alerts(tx: &mut Transaction, alerts: &[AlertRow]) -> Result<Inserted, StoreError> {
    if alerts.is_empty() {
        return Ok(Inserted::default());
    }
    let stored = stored_updates(tx, &batch_ids(alerts))?;
    let plan = plan(alerts, &stored);
    let mut counts = plan.counts;
    if plan.writes.is_empty() {
        return Ok(counts);
    }
    let columns = Columns::of(&plan.writes);
    let sql = format!(
        "{} RETURNING alert_id, (xmax = 0) AS inserted",
        upsert_sql(UNNEST)
    );
    let done: HashMap<String, bool> = tx
        .query(&sql, &columns.params())
        .map_err(err("insert"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for w in &plan.writes {
        let actual = match done.get(&w.row.alert_id) {
            Some(true) => Outcome::New,
            Some(false) => Outcome::Updated,
            None => Outcome::Duplicate,
        };
        counts.correct(w.planned(), actual);
    }
    Ok(counts)
}

/// Every alert, duplicate or not, says its sensor is alive. Sensor rows are taken in sensor
/// order, as in every collector's transactions, so two of them cannot deadlock.
fn touch_sensors(tx: &mut Transaction, alerts: &[AlertRow]) -> Result<(), StoreError> {
    let mut seen: Vec<(&str, i64)> = Vec::new();
    for a in alerts {
        match seen.iter_mut().find(|(s, _)| *s == a.sensor_id) {
            Some((_, t)) => *t = (*t).max(a.received_us),
            None => seen.push((&a.sensor_id, a.received_us)),
        }
    }
    seen.sort();
    for (sensor_id, at_us) in seen {
        tx.execute(
            "INSERT INTO sensors (sensor_id, last_seen_us) VALUES ($1, $2) \
             ON CONFLICT (sensor_id) DO UPDATE SET \
             last_seen_us = GREATEST(sensors.last_seen_us, EXCLUDED.last_seen_us)",
            &[&sensor_id, &at_us],
        )
        .map_err(err("insert"))?;
    }
    Ok(())
}

fn apply_sensor_update(tx: &mut Transaction, s: &SensorUpdate) -> Result<(), StoreError> {
    let result = match s {
        SensorUpdate::Status {
            sensor_id,
            online,
            version,
            model,
            mode,
            started,
            at_us,
        } => tx.execute(
            "INSERT INTO sensors (sensor_id, status, version, model, mode, started, \
             last_seen_us) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (sensor_id) DO UPDATE SET status = EXCLUDED.status, \
             version = EXCLUDED.version, model = EXCLUDED.model, mode = EXCLUDED.mode, \
             started = EXCLUDED.started, \
             last_seen_us = GREATEST(sensors.last_seen_us, EXCLUDED.last_seen_us)",
            &[
                sensor_id,
                &if *online { "online" } else { "offline" },
                version,
                model,
                mode,
                started,
                at_us,
            ],
        ),
        SensorUpdate::Stats {
            sensor_id,
            packets,
            drops,
            outbox_depth,
            alerts_published,
            uptime_s,
            body,
            at_us,
        } => tx.execute(
            "INSERT INTO sensors (sensor_id, packets, drops, outbox_depth, \
             alerts_published, uptime_s, stats, last_seen_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (sensor_id) DO UPDATE SET packets = EXCLUDED.packets, \
             drops = EXCLUDED.drops, outbox_depth = EXCLUDED.outbox_depth, \
             alerts_published = EXCLUDED.alerts_published, \
             uptime_s = EXCLUDED.uptime_s, stats = EXCLUDED.stats, \
             last_seen_us = GREATEST(sensors.last_seen_us, EXCLUDED.last_seen_us)",
            &[
                sensor_id,
                packets,
                drops,
                outbox_depth,
                alerts_published,
                uptime_s,
                body,
                at_us,
            ],
        ),
    };
    result.map(|_| ()).map_err(err("sensor update"))
}

impl Store for PgStore {
    fn insert(
        &mut self,
        alerts: &[AlertRow],
        sensors: &[SensorUpdate],
    ) -> Result<Inserted, StoreError> {
        self.reconnect_if_closed()?;
        let mut tx = self.client.transaction().map_err(err("insert"))?;
        let done = write_alerts(&mut tx, alerts)?;
        touch_sensors(&mut tx, alerts)?;
        // In sensor order (see touch_sensors); a stable sort keeps each sensor's messages in
        // the order they came.
        let mut updates: Vec<&SensorUpdate> = sensors.iter().collect();
        updates.sort_by_key(|u| match u {
            SensorUpdate::Status { sensor_id, .. } | SensorUpdate::Stats { sensor_id, .. } => {
                sensor_id.clone()
            }
        });
        for s in updates {
            apply_sensor_update(&mut tx, s)?;
        }
        tx.commit().map_err(err("commit"))?;
        Ok(done)
    }

    fn alerts(&mut self, f: &Filter, limit: u64, offset: u64) -> Result<AlertPage, StoreError> {
        self.reconnect_if_closed()?;
        let (clause, params) = where_clause(f, |n| format!("${n}"));
        let values = bind(params);
        let total: i64 = self
            .client
            .query_one(
                &format!("SELECT count(*) FROM alerts {clause}"),
                &refs(&values),
            )
            .map_err(err("query"))?
            .get(0);
        Ok(AlertPage {
            total: total as u64,
            alerts: self.newest("body", f, limit, offset)?,
        })
    }

    fn incidents(
        &mut self,
        f: &Filter,
        limit: u64,
        offset: u64,
    ) -> Result<IncidentPage, StoreError> {
        self.reconnect_if_closed()?;
        let (clause, params) = where_clause(f, |n| format!("${n}"));
        let mut values = bind(params);
        let total: i64 = self
            .client
            .query_one(&incident_count_sql(&clause), &refs(&values))
            .map_err(err("query"))?
            .get(0);
        let n = values.len();
        values.push(Box::new(clamp(limit)));
        values.push(Box::new(clamp(offset)));
        let sql = incidents_sql(&clause, &format!("${}", n + 1), &format!("${}", n + 2));
        let mut incidents: Vec<_> = self
            .client
            .query(&sql, &refs(&values))
            .map_err(err("query"))?
            .iter()
            .map(|r| Incident {
                src_ip: addr_or_absent(r.get(0)),
                dest_ip: addr_or_absent(r.get(1)),
                class: r.get(2),
                alerts: r.get(3),
                open: r.get(4),
                first_us: r.get(5),
                last_us: r.get(6),
                severity: r.get(7),
                score: r.get(8),
                count: r.get(9),
                alert_ids: Vec::new(),
            })
            .collect();
        for incident in &mut incidents {
            incident.alert_ids =
                self.newest("alert_id", &incident.filter(f), INCIDENT_ALERT_IDS, 0)?;
        }
        Ok(IncidentPage {
            total: total as u64,
            incidents,
        })
    }

    fn alert(&mut self, alert_id: &str) -> Result<Option<String>, StoreError> {
        self.reconnect_if_closed()?;
        Ok(self
            .client
            .query_opt("SELECT body FROM alerts WHERE alert_id = $1", &[&alert_id])
            .map_err(err("query"))?
            .map(|r| r.get(0)))
    }

    fn sensors(&mut self) -> Result<Vec<Sensor>, StoreError> {
        self.reconnect_if_closed()?;
        let rows = self
            .client
            .query(
                "SELECT sensor_id, status, version, model, mode, started, last_seen_us, packets, \
                 drops, outbox_depth, alerts_published, uptime_s, stats FROM sensors \
                 ORDER BY sensor_id",
                &[],
            )
            .map_err(err("query"))?;
        Ok(rows
            .iter()
            .map(|r| Sensor {
                sensor_id: r.get(0),
                status: r.get(1),
                version: r.get(2),
                model: r.get(3),
                mode: r.get(4),
                started: r.get(5),
                last_seen_us: r.get(6),
                packets: r.get(7),
                drops: r.get(8),
                outbox_depth: r.get(9),
                alerts_published: r.get(10),
                uptime_s: r.get(11),
                stats: r
                    .get::<_, Option<String>>(12)
                    .and_then(|s| serde_json::from_str(&s).ok()),
            })
            .collect())
    }

    fn timeline(
        &mut self,
        f: &Filter,
        bucket_us: Option<i64>,
    ) -> Result<(i64, Vec<Bucket>), StoreError> {
        self.reconnect_if_closed()?;
        let (clause, params) = where_clause(f, |n| format!("${n}"));
        let values = bind(params);
        let bucket = match bucket_us {
            Some(b) => b.max(1_000_000),
            None => {
                let row = self
                    .client
                    .query_one(
                        &format!("SELECT min(ts_us), max(ts_us) FROM alerts {clause}"),
                        &refs(&values),
                    )
                    .map_err(err("query"))?;
                let (lo, hi): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
                bucket_for(hi.unwrap_or(0) - lo.unwrap_or(0))
            }
        };
        let sql = format!(
            "SELECT (ts_us / {bucket}) * {bucket} AS t, category, count(*) FROM alerts {clause} \
             GROUP BY t, category ORDER BY t, category"
        );
        let rows = self
            .client
            .query(&sql, &refs(&values))
            .map_err(err("query"))?;
        Ok((
            bucket,
            rows.iter()
                .map(|r| Bucket {
                    t_us: r.get(0),
                    category: r.get(1),
                    count: r.get(2),
                })
                .collect(),
        ))
    }

    fn prune(
        &mut self,
        received_before_us: Option<i64>,
        max_rows: Option<u64>,
    ) -> Result<u64, StoreError> {
        self.reconnect_if_closed()?;
        let mut tx = self.client.transaction().map_err(err("retention"))?;
        let mut deleted = 0;
        if let Some(t) = received_before_us {
            deleted += tx
                .execute("DELETE FROM alerts WHERE received_us < $1", &[&t])
                .map_err(err("retention"))?;
        }
        if let Some(max) = max_rows {
            let count: i64 = tx
                .query_one("SELECT count(*) FROM alerts", &[])
                .map_err(err("retention"))?
                .get(0);
            let excess = (count as u64).saturating_sub(max);
            if excess > 0 {
                deleted += tx
                    .execute(
                        "DELETE FROM alerts WHERE seq IN \
                         (SELECT seq FROM alerts ORDER BY received_us, seq LIMIT $1)",
                        &[&(excess as i64)],
                    )
                    .map_err(err("retention"))?;
            }
        }
        tx.commit().map_err(err("retention"))?;
        Ok(deleted)
    }

    fn ping(&mut self) -> Result<(), StoreError> {
        self.reconnect_if_closed()?;
        self.client
            .query_one("SELECT 1", &[])
            .map(|_| ())
            .map_err(err("ping"))
    }
}
