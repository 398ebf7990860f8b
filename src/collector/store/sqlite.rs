//! The SQLite backend: one file, WAL journal (readers never block the writer), full sync at each
//! commit so that an acknowledged message is on disk. The embedded default for one collector.

use rusqlite::{Connection, OptionalExtension, params, params_from_iter, types::Value};

use super::{
    AlertPage, AlertRow, Bucket, Filter, Inserted, Param, SCHEMA_VERSION, Sensor, SensorUpdate,
    Store, StoreError, bucket_for, where_clause,
};

/// Migration n (1-based) takes the schema from version n-1 to n.
const MIGRATIONS: [&str; 1] = [r#"
CREATE TABLE alerts (
    seq INTEGER PRIMARY KEY,
    alert_id TEXT NOT NULL UNIQUE,
    ts_us INTEGER NOT NULL,
    received_us INTEGER NOT NULL,
    sensor_id TEXT NOT NULL,
    category TEXT NOT NULL,
    signature TEXT NOT NULL,
    severity INTEGER NOT NULL,
    score REAL NOT NULL,
    src_ip TEXT NOT NULL,
    src_port INTEGER,
    dest_ip TEXT NOT NULL,
    dest_port INTEGER,
    proto TEXT NOT NULL,
    count INTEGER NOT NULL,
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
    last_seen_us INTEGER NOT NULL DEFAULT 0,
    packets INTEGER NOT NULL DEFAULT 0,
    drops INTEGER NOT NULL DEFAULT 0,
    outbox_depth INTEGER NOT NULL DEFAULT 0,
    alerts_published INTEGER NOT NULL DEFAULT 0,
    uptime_s INTEGER NOT NULL DEFAULT 0,
    stats TEXT
);
"#];

pub struct SqliteStore {
    conn: Connection,
}

fn err(context: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite {
        context: context.to_string(),
        source,
    }
}

fn bind(params: Vec<Param>) -> Vec<Value> {
    params
        .into_iter()
        .map(|p| match p {
            Param::Int(v) => Value::Integer(v),
            Param::Text(v) => Value::Text(v),
        })
        .collect()
}

impl SqliteStore {
    pub fn open(path: &str, migrate: bool) -> Result<SqliteStore, StoreError> {
        if migrate && let Some(dir) = std::path::Path::new(path).parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(err(path))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err(path))?;
        let _: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(err("setting WAL"))?;
        // 64 MiB of page cache: the alert_id index takes keys in random order.
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA cache_size = -65536")
            .map_err(err("setting synchronous"))?;
        let mut store = SqliteStore { conn };
        if migrate {
            store.migrate()?;
            store.optimize(true)?;
        }
        Ok(store)
    }

    /// Keeps the planner's statistics current (ANALYZE where needed, bounded in time), so that
    /// a query filtered on a sensor walks that sensor's index rather than a whole category's.
    fn optimize(&mut self, at_open: bool) -> Result<(), StoreError> {
        let sql = if at_open {
            "PRAGMA analysis_limit = 1000; PRAGMA optimize = 0x10002"
        } else {
            "PRAGMA optimize"
        };
        self.conn.execute_batch(sql).map_err(err("optimize"))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err("migration"))?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            .map_err(err("migration"))?;
        let found: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version",
                [],
                |r| r.get(0),
            )
            .map_err(err("migration"))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew { found });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.execute_batch(sql).map_err(err("migration"))?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [i as i64 + 1],
            )
            .map_err(err("migration"))?;
        }
        tx.commit().map_err(err("migration"))
    }
}

impl Store for SqliteStore {
    fn insert(
        &mut self,
        alerts: &[AlertRow],
        sensors: &[SensorUpdate],
    ) -> Result<Inserted, StoreError> {
        let tx = self.conn.transaction().map_err(err("insert"))?;
        let mut done = Inserted::default();
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO alerts (alert_id, ts_us, received_us, sensor_id, category, \
                     signature, severity, score, src_ip, src_port, dest_ip, dest_port, proto, \
                     count, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, \
                     ?14, ?15) ON CONFLICT (alert_id) DO NOTHING",
                )
                .map_err(err("insert"))?;
            let mut seen = tx
                .prepare_cached(
                    "INSERT INTO sensors (sensor_id, last_seen_us) VALUES (?1, ?2) \
                     ON CONFLICT (sensor_id) DO UPDATE SET \
                     last_seen_us = max(last_seen_us, excluded.last_seen_us)",
                )
                .map_err(err("insert"))?;
            let mut last_sensor = "";
            for a in alerts {
                let n = insert
                    .execute(params![
                        a.alert_id,
                        a.ts_us,
                        a.received_us,
                        a.sensor_id,
                        a.category,
                        a.signature,
                        a.severity,
                        a.score,
                        a.src_ip,
                        a.src_port,
                        a.dest_ip,
                        a.dest_port,
                        a.proto,
                        a.count,
                        a.body
                    ])
                    .map_err(err("insert"))?;
                if n == 1 {
                    done.new += 1;
                } else {
                    done.duplicate += 1;
                }
                if a.sensor_id != last_sensor {
                    seen.execute(params![a.sensor_id, a.received_us])
                        .map_err(err("insert"))?;
                    last_sensor = &a.sensor_id;
                }
            }
        }
        for s in sensors {
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
                     last_seen_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                     ON CONFLICT (sensor_id) DO UPDATE SET status = excluded.status, \
                     version = excluded.version, model = excluded.model, mode = excluded.mode, \
                     started = excluded.started, \
                     last_seen_us = max(last_seen_us, excluded.last_seen_us)",
                    params![
                        sensor_id,
                        if *online { "online" } else { "offline" },
                        version,
                        model,
                        mode,
                        started,
                        at_us
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
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                     ON CONFLICT (sensor_id) DO UPDATE SET packets = excluded.packets, \
                     drops = excluded.drops, outbox_depth = excluded.outbox_depth, \
                     alerts_published = excluded.alerts_published, \
                     uptime_s = excluded.uptime_s, stats = excluded.stats, \
                     last_seen_us = max(last_seen_us, excluded.last_seen_us)",
                    params![
                        sensor_id,
                        packets,
                        drops,
                        outbox_depth,
                        alerts_published,
                        uptime_s,
                        body,
                        at_us
                    ],
                ),
            };
            result.map_err(err("sensor update"))?;
        }
        tx.commit().map_err(err("commit"))?;
        Ok(done)
    }

    fn alerts(&mut self, f: &Filter, limit: u64, offset: u64) -> Result<AlertPage, StoreError> {
        let (clause, params) = where_clause(f, |n| format!("?{n}"));
        let values = bind(params);
        // With several filters SQLite may walk a whole category's index (200k rows) where the
        // sensor's (10k) would do: name the most selective index there is a filter for.
        let hint = if f.src_ip.is_some() {
            "INDEXED BY alerts_src_ts"
        } else if f.dest_ip.is_some() {
            "INDEXED BY alerts_dest_ts"
        } else if f.sensor.is_some() {
            "INDEXED BY alerts_sensor_ts"
        } else {
            ""
        };
        let total: i64 = self
            .conn
            .prepare_cached(&format!("SELECT count(*) FROM alerts {hint} {clause}"))
            .and_then(|mut s| s.query_row(params_from_iter(values.iter()), |r| r.get(0)))
            .map_err(err("query"))?;
        let n = values.len();
        let sql = format!(
            "SELECT body FROM alerts {hint} {clause} ORDER BY ts_us DESC, seq DESC \
             LIMIT ?{} OFFSET ?{}",
            n + 1,
            n + 2
        );
        let mut values = values;
        values.push(Value::Integer(limit.min(i64::MAX as u64) as i64));
        values.push(Value::Integer(offset.min(i64::MAX as u64) as i64));
        let mut stmt = self.conn.prepare_cached(&sql).map_err(err("query"))?;
        let alerts = stmt
            .query_map(params_from_iter(values.iter()), |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(err("query"))?;
        Ok(AlertPage {
            total: total as u64,
            alerts,
        })
    }

    fn alert(&mut self, alert_id: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT body FROM alerts WHERE alert_id = ?1",
                [alert_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(err("query"))
    }

    fn sensors(&mut self) -> Result<Vec<Sensor>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT sensor_id, status, version, model, mode, started, last_seen_us, packets, \
                 drops, outbox_depth, alerts_published, uptime_s, stats FROM sensors \
                 ORDER BY sensor_id",
            )
            .map_err(err("query"))?;
        stmt.query_map([], |r| {
            Ok(Sensor {
                sensor_id: r.get(0)?,
                status: r.get(1)?,
                version: r.get(2)?,
                model: r.get(3)?,
                mode: r.get(4)?,
                started: r.get(5)?,
                last_seen_us: r.get(6)?,
                packets: r.get(7)?,
                drops: r.get(8)?,
                outbox_depth: r.get(9)?,
                alerts_published: r.get(10)?,
                uptime_s: r.get(11)?,
                stats: r
                    .get::<_, Option<String>>(12)?
                    .and_then(|s| serde_json::from_str(&s).ok()),
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(err("query"))
    }

    fn timeline(
        &mut self,
        f: &Filter,
        bucket_us: Option<i64>,
    ) -> Result<(i64, Vec<Bucket>), StoreError> {
        let (clause, params) = where_clause(f, |n| format!("?{n}"));
        let values = bind(params);
        let bucket = match bucket_us {
            Some(b) => b.max(1_000_000),
            None => {
                let (lo, hi): (Option<i64>, Option<i64>) = self
                    .conn
                    .prepare_cached(&format!(
                        "SELECT min(ts_us), max(ts_us) FROM alerts {clause}"
                    ))
                    .and_then(|mut s| {
                        s.query_row(params_from_iter(values.iter()), |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })
                    })
                    .map_err(err("query"))?;
                bucket_for(hi.unwrap_or(0) - lo.unwrap_or(0))
            }
        };
        let sql = format!(
            "SELECT (ts_us / {bucket}) * {bucket} AS t, category, count(*) FROM alerts {clause} \
             GROUP BY t, category ORDER BY t, category"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(err("query"))?;
        let rows = stmt
            .query_map(params_from_iter(values.iter()), |r| {
                Ok(Bucket {
                    t_us: r.get(0)?,
                    category: r.get(1)?,
                    count: r.get(2)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(err("query"))?;
        Ok((bucket, rows))
    }

    fn prune(
        &mut self,
        received_before_us: Option<i64>,
        max_rows: Option<u64>,
    ) -> Result<u64, StoreError> {
        let tx = self.conn.transaction().map_err(err("retention"))?;
        let mut deleted = 0;
        if let Some(t) = received_before_us {
            deleted += tx
                .execute("DELETE FROM alerts WHERE received_us < ?1", [t])
                .map_err(err("retention"))? as u64;
        }
        if let Some(max) = max_rows {
            let count: i64 = tx
                .query_row("SELECT count(*) FROM alerts", [], |r| r.get(0))
                .map_err(err("retention"))?;
            let excess = (count as u64).saturating_sub(max);
            if excess > 0 {
                deleted += tx
                    .execute(
                        "DELETE FROM alerts WHERE seq IN \
                         (SELECT seq FROM alerts ORDER BY seq LIMIT ?1)",
                        [excess as i64],
                    )
                    .map_err(err("retention"))? as u64;
            }
        }
        tx.commit().map_err(err("retention"))?;
        self.optimize(false)?;
        Ok(deleted)
    }

    fn ping(&mut self) -> Result<(), StoreError> {
        self.conn
            .query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
            .map(|_| ())
            .map_err(err("ping"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Filter, SensorUpdate, Store};
    use super::*;

    fn row(id: u32, sensor: &str, ts_us: i64, received_us: i64) -> AlertRow {
        AlertRow {
            alert_id: format!("{id:032x}"),
            ts_us,
            received_us,
            sensor_id: sensor.into(),
            category: if id.is_multiple_of(2) { "scan" } else { "dos" }.into(),
            signature: "s".into(),
            severity: 2,
            score: 0.5,
            src_ip: "10.0.0.1".into(),
            src_port: Some(1),
            dest_ip: "10.0.0.2".into(),
            dest_port: None,
            proto: "TCP".into(),
            count: 1,
            body: format!("{{\"alert_id\":\"{id:032x}\"}}"),
        }
    }

    #[test]
    fn idempotent_insert_filters_retention_and_sensors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let mut s = SqliteStore::open(path.to_str().unwrap(), true).unwrap();
        // Opening again finds the schema in place.
        drop(SqliteStore::open(path.to_str().unwrap(), true).unwrap());
        let rows: Vec<AlertRow> = (0..10)
            .map(|i| row(i, "r1", i as i64 * 10, i as i64))
            .collect();
        assert_eq!(
            s.insert(&rows, &[]).unwrap(),
            Inserted {
                new: 10,
                duplicate: 0
            }
        );
        assert_eq!(
            s.insert(&rows[..3], &[]).unwrap(),
            Inserted {
                new: 0,
                duplicate: 3
            }
        );
        let page = s.alerts(&Filter::default(), 3, 0).unwrap();
        assert_eq!(page.total, 10);
        assert_eq!(page.alerts[0], rows[9].body, "newest first");
        let f = Filter {
            category: Some("scan".into()),
            since_us: Some(20),
            until_us: Some(80),
            ..Filter::default()
        };
        assert_eq!(s.alerts(&f, 50, 0).unwrap().total, 3); // 20, 40, 60
        assert_eq!(
            s.alert(&rows[4].alert_id).unwrap(),
            Some(rows[4].body.clone())
        );
        assert_eq!(s.alert("nope").unwrap(), None);
        let (bucket, buckets) = s.timeline(&Filter::default(), Some(1_000_000)).unwrap();
        assert_eq!(bucket, 1_000_000);
        assert_eq!(buckets.iter().map(|b| b.count).sum::<i64>(), 10);

        s.insert(
            &[],
            &[SensorUpdate::Status {
                sensor_id: "r1".into(),
                online: false,
                version: "0.1.0".into(),
                model: "m 1".into(),
                mode: "run".into(),
                started: "t".into(),
                at_us: 100,
            }],
        )
        .unwrap();
        let sensors = s.sensors().unwrap();
        assert_eq!(sensors.len(), 1);
        assert_eq!(
            (sensors[0].status.as_str(), sensors[0].last_seen_us),
            ("offline", 100)
        );

        // Received before 3: ids 0, 1, 2 go; then keep the newest 5 of the 7 left.
        assert_eq!(s.prune(Some(3), Some(5)).unwrap(), 3 + 2);
        let left = s.alerts(&Filter::default(), 50, 0).unwrap();
        assert_eq!(left.total, 5);
        assert_eq!(left.alerts.last().unwrap(), &rows[5].body);
    }
}
