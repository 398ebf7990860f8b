//! The PostgreSQL backend (the synchronous `postgres` client, no TLS: keep the database on the
//! collectors' private network or a Unix socket). Several collectors may share one database:
//! inserts are idempotent by `alert_id`, and migrations take an advisory lock so that collectors
//! starting together upgrade the schema once.

use postgres::types::ToSql;
use postgres::{Client, NoTls};

use super::{
    AlertPage, AlertRow, Bucket, Filter, Inserted, Param, SCHEMA_VERSION, Sensor, SensorUpdate,
    Store, StoreError, bucket_for, where_clause,
};

/// Migration n (1-based) takes the schema from version n-1 to n.
const MIGRATIONS: [&str; 1] = [r#"
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
"#];

/// A batch of alerts, column by column.
#[derive(Default)]
struct Columns<'a> {
    alert_id: Vec<&'a str>,
    ts_us: Vec<i64>,
    received_us: Vec<i64>,
    sensor_id: Vec<&'a str>,
    category: Vec<&'a str>,
    signature: Vec<&'a str>,
    severity: Vec<i64>,
    score: Vec<f64>,
    src_ip: Vec<&'a str>,
    src_port: Vec<Option<i64>>,
    dest_ip: Vec<&'a str>,
    dest_port: Vec<Option<i64>>,
    proto: Vec<&'a str>,
    count: Vec<i64>,
    body: Vec<&'a str>,
}

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

    /// A new connection when the old one died (database restarted, network cut).
    fn reconnect_if_closed(&mut self) -> Result<(), StoreError> {
        if self.client.is_closed() {
            self.client = Client::connect(&self.url, NoTls).map_err(err("reconnect"))?;
        }
        Ok(())
    }
}

impl Store for PgStore {
    fn insert(
        &mut self,
        alerts: &[AlertRow],
        sensors: &[SensorUpdate],
    ) -> Result<Inserted, StoreError> {
        self.reconnect_if_closed()?;
        // One order for every collector's transactions, so that two of them inserting the same
        // (resent) alerts cannot deadlock.
        let mut order: Vec<&AlertRow> = alerts.iter().collect();
        order.sort_by(|a, b| a.alert_id.cmp(&b.alert_id));
        // One statement for the whole batch (columns as arrays), so a batch costs one round trip.
        let mut c = Columns::default();
        let mut seen: Vec<(&str, i64)> = Vec::new();
        for a in order {
            c.alert_id.push(&a.alert_id);
            c.ts_us.push(a.ts_us);
            c.received_us.push(a.received_us);
            c.sensor_id.push(&a.sensor_id);
            c.category.push(&a.category);
            c.signature.push(&a.signature);
            c.severity.push(a.severity);
            c.score.push(a.score);
            c.src_ip.push(&a.src_ip);
            c.src_port.push(a.src_port);
            c.dest_ip.push(&a.dest_ip);
            c.dest_port.push(a.dest_port);
            c.proto.push(&a.proto);
            c.count.push(a.count);
            c.body.push(&a.body);
            match seen.iter_mut().find(|(s, _)| *s == a.sensor_id) {
                Some((_, t)) => *t = (*t).max(a.received_us),
                None => seen.push((&a.sensor_id, a.received_us)),
            }
        }
        let mut tx = self.client.transaction().map_err(err("insert"))?;
        let mut done = Inserted::default();
        if !alerts.is_empty() {
            let new = tx
                .execute(
                    "INSERT INTO alerts (alert_id, ts_us, received_us, sensor_id, category, \
                     signature, severity, score, src_ip, src_port, dest_ip, dest_port, proto, \
                     count, body) \
                     SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], \
                     $5::text[], $6::text[], $7::bigint[], $8::float8[], $9::text[], \
                     $10::bigint[], $11::text[], $12::bigint[], $13::text[], $14::bigint[], \
                     $15::text[]) \
                     ON CONFLICT (alert_id) DO NOTHING",
                    &[
                        &c.alert_id,
                        &c.ts_us,
                        &c.received_us,
                        &c.sensor_id,
                        &c.category,
                        &c.signature,
                        &c.severity,
                        &c.score,
                        &c.src_ip,
                        &c.src_port,
                        &c.dest_ip,
                        &c.dest_port,
                        &c.proto,
                        &c.count,
                        &c.body,
                    ],
                )
                .map_err(err("insert"))?;
            done.new = new;
            done.duplicate = alerts.len() as u64 - new;
        }
        // Sensor rows in sensor order (same reason); a stable sort keeps each sensor's messages
        // in the order they came.
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
        let mut updates: Vec<&SensorUpdate> = sensors.iter().collect();
        updates.sort_by_key(|u| match u {
            SensorUpdate::Status { sensor_id, .. } | SensorUpdate::Stats { sensor_id, .. } => {
                sensor_id.clone()
            }
        });
        for s in updates {
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
            result.map_err(err("sensor update"))?;
        }
        tx.commit().map_err(err("commit"))?;
        Ok(done)
    }

    fn alerts(&mut self, f: &Filter, limit: u64, offset: u64) -> Result<AlertPage, StoreError> {
        self.reconnect_if_closed()?;
        let (clause, params) = where_clause(f, |n| format!("${n}"));
        let mut values = bind(params);
        let total: i64 = self
            .client
            .query_one(
                &format!("SELECT count(*) FROM alerts {clause}"),
                &refs(&values),
            )
            .map_err(err("query"))?
            .get(0);
        let n = values.len();
        values.push(Box::new(limit.min(i64::MAX as u64) as i64));
        values.push(Box::new(offset.min(i64::MAX as u64) as i64));
        let sql = format!(
            "SELECT body FROM alerts {clause} ORDER BY ts_us DESC, seq DESC LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let rows = self
            .client
            .query(&sql, &refs(&values))
            .map_err(err("query"))?;
        Ok(AlertPage {
            total: total as u64,
            alerts: rows.iter().map(|r| r.get(0)).collect(),
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
                         (SELECT seq FROM alerts ORDER BY seq LIMIT $1)",
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
