//! The SQLite backend: one file, WAL journal (readers never block the writer), full sync at each
//! commit so that an acknowledged message is on disk. The embedded default for one collector.

use std::collections::HashMap;

use rusqlite::{
    Connection, OptionalExtension, Transaction, params, params_from_iter, types::Value,
};

use super::{
    AlertPage, AlertRow, Bucket, Filter, INCIDENT_ALERT_IDS, Incident, IncidentPage, Inserted,
    Param, SCHEMA_VERSION, Sensor, SensorUpdate, Store, StoreError, addr_or_absent, batch_ids,
    bucket_for, incident_count_sql, incidents_sql, plan, upsert_sql, where_clause,
};

/// Migration n (1-based) takes the schema from version n-1 to n. Each runs in the transaction
/// that records its version, so a failed one leaves the database as it was.
const MIGRATIONS: [&str; 2] = [
    r#"
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
"#,
    // Version 2: one row per alert and its updates (update_no, final), the behaviour (class),
    // the episode's times, and addresses that may be absent. SQLite cannot drop NOT NULL, so
    // the table is built anew and the rows copied, seq included. A version 1 row is one
    // complete record: update 0, final, its class from the signature
    // ("EDGEWATCH anomalous traffic: <class>"), its episode at its own time.
    r#"
CREATE TABLE alerts_v2 (
    seq INTEGER PRIMARY KEY,
    alert_id TEXT NOT NULL UNIQUE,
    update_no INTEGER NOT NULL,
    final INTEGER NOT NULL,
    ts_us INTEGER NOT NULL,
    received_us INTEGER NOT NULL,
    sensor_id TEXT NOT NULL,
    category TEXT NOT NULL,
    signature TEXT NOT NULL,
    class TEXT NOT NULL,
    severity INTEGER NOT NULL,
    score REAL NOT NULL,
    src_ip TEXT,
    src_port INTEGER,
    dest_ip TEXT,
    dest_port INTEGER,
    proto TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_us INTEGER NOT NULL,
    last_us INTEGER NOT NULL,
    body TEXT NOT NULL
);
INSERT INTO alerts_v2 (seq, alert_id, update_no, final, ts_us, received_us, sensor_id, category,
    signature, class, severity, score, src_ip, src_port, dest_ip, dest_port, proto, count,
    first_us, last_us, body)
SELECT seq, alert_id, 0, 1, ts_us, received_us, sensor_id, category, signature,
    CASE WHEN signature LIKE 'EDGEWATCH anomalous traffic: %'
         THEN substr(signature, length('EDGEWATCH anomalous traffic: ') + 1) ELSE '' END,
    severity, score, src_ip, src_port, dest_ip, dest_port, proto, count, ts_us, ts_us, body
FROM alerts;
DROP TABLE alerts;
ALTER TABLE alerts_v2 RENAME TO alerts;
CREATE INDEX alerts_ts ON alerts (ts_us);
CREATE INDEX alerts_sensor_ts ON alerts (sensor_id, ts_us);
CREATE INDEX alerts_category_ts ON alerts (category, ts_us);
CREATE INDEX alerts_src_ts ON alerts (src_ip, ts_us);
CREATE INDEX alerts_dest_ts ON alerts (dest_ip, ts_us);
CREATE INDEX alerts_received ON alerts (received_us);
CREATE INDEX alerts_incident ON alerts (src_ip, dest_ip, class, ts_us);
"#,
];

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

/// A page's limit or offset as SQLite's integer.
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// With several filters SQLite may walk a whole category's index (200k rows) where the
/// sensor's (10k) would do: the most selective index there is a filter for.
fn index_hint(f: &Filter) -> &'static str {
    match (&f.src_ip, &f.dest_ip) {
        (Some(_), Some(_)) => "INDEXED BY alerts_incident",
        (Some(_), None) => "INDEXED BY alerts_src_ts",
        (None, Some(_)) => "INDEXED BY alerts_dest_ts",
        (None, None) if f.sensor.is_some() => "INDEXED BY alerts_sensor_ts",
        (None, None) => "",
    }
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

    /// `column` of the alerts matching `f`, newest first.
    fn newest(
        &mut self,
        column: &str,
        f: &Filter,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<String>, StoreError> {
        let (clause, params) = where_clause(f, |n| format!("?{n}"));
        let mut values = bind(params);
        let n = values.len();
        let sql = format!(
            "SELECT {column} FROM alerts {} {clause} ORDER BY ts_us DESC, seq DESC \
             LIMIT ?{} OFFSET ?{}",
            index_hint(f),
            n + 1,
            n + 2
        );
        values.push(Value::Integer(clamp(limit)));
        values.push(Value::Integer(clamp(offset)));
        let mut stmt = self.conn.prepare_cached(&sql).map_err(err("query"))?;
        stmt.query_map(params_from_iter(values.iter()), |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(err("query"))
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

/// The update stored for each of `ids` that is stored.
fn stored_updates(tx: &Transaction, ids: &[&str]) -> Result<HashMap<String, i64>, StoreError> {
    let mut stmt = tx
        .prepare_cached("SELECT update_no FROM alerts WHERE alert_id = ?1")
        .map_err(err("insert"))?;
    let mut stored = HashMap::new();
    for id in ids {
        let update: Option<i64> = stmt
            .query_row([id], |r| r.get(0))
            .optional()
            .map_err(err("insert"))?;
        if let Some(update) = update {
            stored.insert(id.to_string(), update);
        }
    }
    Ok(stored)
}

/// Writes the batch's alert records. The transaction is IMMEDIATE (the write lock is taken at
/// its start), so what `stored_updates` read is what the writes change: the plan's counts are
/// exact.
fn write_alerts(tx: &Transaction, alerts: &[AlertRow]) -> Result<Inserted, StoreError> {
    let stored = stored_updates(tx, &batch_ids(alerts))?;
    let plan = plan(alerts, &stored);
    let placeholders: Vec<String> = (1..=20).map(|n| format!("?{n}")).collect();
    let mut upsert = tx
        .prepare_cached(&upsert_sql(&format!(
            "VALUES ({})",
            placeholders.join(", ")
        )))
        .map_err(err("insert"))?;
    for w in &plan.writes {
        let a = w.row;
        upsert
            .execute(params![
                a.alert_id,
                a.update,
                a.is_final,
                a.ts_us,
                a.received_us,
                a.sensor_id,
                a.category,
                a.signature,
                a.class,
                a.severity,
                a.score,
                a.src_ip,
                a.src_port,
                a.dest_ip,
                a.dest_port,
                a.proto,
                a.count,
                a.first_us,
                a.last_us,
                a.body
            ])
            .map_err(err("insert"))?;
    }
    Ok(plan.counts)
}

/// Every alert, duplicate or not, says its sensor is alive.
fn touch_sensors(tx: &Transaction, alerts: &[AlertRow]) -> Result<(), StoreError> {
    let mut seen = tx
        .prepare_cached(
            "INSERT INTO sensors (sensor_id, last_seen_us) VALUES (?1, ?2) \
             ON CONFLICT (sensor_id) DO UPDATE SET \
             last_seen_us = max(last_seen_us, excluded.last_seen_us)",
        )
        .map_err(err("insert"))?;
    let mut last_sensor = "";
    for a in alerts {
        if a.sensor_id != last_sensor {
            seen.execute(params![a.sensor_id, a.received_us])
                .map_err(err("insert"))?;
            last_sensor = &a.sensor_id;
        }
    }
    Ok(())
}

fn apply_sensor_update(tx: &Transaction, s: &SensorUpdate) -> Result<(), StoreError> {
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
    result.map(|_| ()).map_err(err("sensor update"))
}

impl Store for SqliteStore {
    fn insert(
        &mut self,
        alerts: &[AlertRow],
        sensors: &[SensorUpdate],
    ) -> Result<Inserted, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err("insert"))?;
        let done = write_alerts(&tx, alerts)?;
        touch_sensors(&tx, alerts)?;
        for s in sensors {
            apply_sensor_update(&tx, s)?;
        }
        tx.commit().map_err(err("commit"))?;
        Ok(done)
    }

    fn alerts(&mut self, f: &Filter, limit: u64, offset: u64) -> Result<AlertPage, StoreError> {
        let (clause, params) = where_clause(f, |n| format!("?{n}"));
        let values = bind(params);
        let hint = index_hint(f);
        let total: i64 = self
            .conn
            .prepare_cached(&format!("SELECT count(*) FROM alerts {hint} {clause}"))
            .and_then(|mut s| s.query_row(params_from_iter(values.iter()), |r| r.get(0)))
            .map_err(err("query"))?;
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
        let (clause, params) = where_clause(f, |n| format!("?{n}"));
        let mut values = bind(params);
        let total: i64 = self
            .conn
            .prepare_cached(&incident_count_sql(&clause))
            .and_then(|mut s| s.query_row(params_from_iter(values.iter()), |r| r.get(0)))
            .map_err(err("query"))?;
        let n = values.len();
        values.push(Value::Integer(clamp(limit)));
        values.push(Value::Integer(clamp(offset)));
        let sql = incidents_sql(&clause, &format!("?{}", n + 1), &format!("?{}", n + 2));
        let mut incidents = self
            .conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_map(params_from_iter(values.iter()), |r| {
                    Ok(Incident {
                        src_ip: addr_or_absent(r.get(0)?),
                        dest_ip: addr_or_absent(r.get(1)?),
                        class: r.get(2)?,
                        alerts: r.get(3)?,
                        open: r.get(4)?,
                        first_us: r.get(5)?,
                        last_us: r.get(6)?,
                        severity: r.get(7)?,
                        score: r.get(8)?,
                        count: r.get(9)?,
                        alert_ids: Vec::new(),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(err("query"))?;
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
                         (SELECT seq FROM alerts ORDER BY received_us, seq LIMIT ?1)",
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
    use super::super::{AddrFilter, Filter, SensorUpdate, Store, test_row};
    use super::*;

    fn open(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(dir.path().join("a.db").to_str().unwrap(), true).unwrap()
    }

    #[test]
    fn idempotent_insert_filters_retention_and_sensors() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir);
        // Opening again finds the schema in place.
        drop(open(&dir));
        let rows: Vec<AlertRow> = (0..10)
            .map(|i| test_row(i, 0, i as i64 * 10, i as i64))
            .collect();
        assert_eq!(
            s.insert(&rows, &[]).unwrap(),
            Inserted {
                new: 10,
                ..Inserted::default()
            }
        );
        assert_eq!(
            s.insert(&rows[..3], &[]).unwrap(),
            Inserted {
                duplicate: 3,
                ..Inserted::default()
            }
        );
        let page = s.alerts(&Filter::default(), 3, 0).unwrap();
        assert_eq!(page.total, 10);
        assert_eq!(page.alerts[0], rows[9].body, "newest first");
        let f = Filter {
            class: Some("scan".into()),
            since_us: Some(20),
            until_us: Some(80),
            ..Filter::default()
        };
        assert_eq!(s.alerts(&f, 50, 0).unwrap().total, 3); // 20, 40, 60
        let many_sources = Filter {
            src_ip: Some(AddrFilter::Absent),
            ..Filter::default()
        };
        assert_eq!(s.alerts(&many_sources, 50, 0).unwrap().total, 5);
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

    #[test]
    fn a_higher_update_replaces_the_row_and_incidents_group_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir);
        // Alert 2 (scan from 10.0.0.1) and its updates out of order; alert 4 in the same
        // incident; alert 1 a flood from many sources.
        let batch = [
            test_row(2, 1, 100, 1),
            test_row(2, 0, 50, 1),
            test_row(4, 0, 60, 1),
            test_row(1, 0, 70, 1),
        ];
        assert_eq!(
            s.insert(&batch, &[]).unwrap(),
            Inserted {
                new: 3,
                updated: 0,
                duplicate: 1
            }
        );
        let mut last = test_row(2, 2, 200, 2);
        last.is_final = true;
        assert_eq!(
            s.insert(&[last.clone(), batch[0].clone()], &[]).unwrap(),
            Inserted {
                new: 0,
                updated: 1,
                duplicate: 1
            }
        );
        assert_eq!(s.alert(&last.alert_id).unwrap(), Some(last.body.clone()));
        assert_eq!(s.alerts(&Filter::default(), 50, 0).unwrap().total, 3);

        let page = s.incidents(&Filter::default(), 50, 0).unwrap();
        assert_eq!(page.total, 2);
        let scan = &page.incidents[0];
        assert_eq!(
            (
                scan.src_ip.as_str(),
                scan.dest_ip.as_str(),
                scan.class.as_str()
            ),
            ("10.0.0.1", "10.0.0.2", "scan")
        );
        assert_eq!((scan.alerts, scan.open, scan.count), (2, 1, 3 + 1));
        assert_eq!((scan.first_us, scan.last_us), (60, 202));
        assert_eq!(
            scan.alert_ids,
            [last.alert_id.clone(), batch[2].alert_id.clone()]
        );
        let flood = &page.incidents[1];
        assert_eq!((flood.src_ip.as_str(), flood.alerts), ("*", 1));
        // An incident's alerts, "*" for the absent source.
        let f = flood.filter(&Filter::default());
        assert_eq!(f.src_ip, Some(AddrFilter::Absent));
        assert_eq!(s.alerts(&f, 50, 0).unwrap().alerts, [batch[3].body.clone()]);
        // Filters apply before grouping.
        let late = Filter {
            since_us: Some(65),
            ..Filter::default()
        };
        let page = s.incidents(&late, 1, 0).unwrap();
        assert_eq!(page.total, 2);
        assert_eq!(page.incidents.len(), 1);
        assert_eq!(
            (page.incidents[0].alerts, page.incidents[0].alert_ids.len()),
            (1, 1)
        );
    }

    #[test]
    fn a_version_1_database_is_upgraded_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_version (version INTEGER NOT NULL);
                 INSERT INTO schema_version VALUES (1);
                 INSERT INTO alerts (alert_id, ts_us, received_us, sensor_id, category, \
                 signature, severity, score, src_ip, src_port, dest_ip, dest_port, proto, count, \
                 body) VALUES ('00000000000000000000000000000007', 5, 6, 'r1', 'c', \
                 'EDGEWATCH anomalous traffic: flood', 1, 0.9, '10.0.0.1', 1, '10.0.0.2', 80, \
                 'TCP', 3, '{}');",
            )
            .unwrap();
        }
        let mut s = open(&dir);
        let version: i64 = s
            .conn
            .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let page = s.incidents(&Filter::default(), 50, 0).unwrap();
        assert_eq!(page.incidents.len(), 1);
        let old = &page.incidents[0];
        assert_eq!(
            (
                old.class.as_str(),
                old.alerts,
                old.open,
                old.count,
                old.first_us
            ),
            ("flood", 1, 0, 3, 5)
        );
        // The upgraded table takes new records, and the old one is replaced by no resend.
        let mut row = test_row(7, 0, 9, 9);
        row.src_ip = None;
        assert_eq!(s.insert(&[row], &[]).unwrap().duplicate, 1);
        assert_eq!(s.insert(&[test_row(8, 0, 9, 9)], &[]).unwrap().new, 1);
        assert_eq!(s.alerts(&Filter::default(), 50, 0).unwrap().total, 2);
    }
}
