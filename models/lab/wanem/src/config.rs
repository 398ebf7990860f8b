//! Configuration: a JSON file and/or command-line options, resolved into per-direction
//! parameters for the default path, each configured path and the shared access link.
//!
//! "up" is the direction inner -> outer (from the local network towards the remote hosts),
//! "down" is outer -> inner. A path's remote address is the destination of an "up" packet and
//! the source of a "down" packet.

use crate::json::Json;
use std::collections::BTreeMap;
use std::fmt::Write as _;

pub const UP: usize = 0;
pub const DOWN: usize = 1;
pub const DIR_NAMES: [&str; 2] = ["up", "down"];

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum JitterDist {
    /// delay + U(-jitter, +jitter)
    Uniform,
    /// delay + N(0, jitter), cut at +-3 jitter
    Normal,
}

/// What one direction of one path does to a packet.
#[derive(Clone, Debug, PartialEq)]
pub struct DirParams {
    pub delay_ms: f64,
    pub jitter_ms: f64,
    pub jitter_dist: JitterDist,
    /// probability of dropping a packet, 0..1
    pub loss: f64,
    /// 0 = no rate limit
    pub rate_mbit: f64,
    /// token bucket depth; None = max(2 full frames, 2 ms at the rate)
    pub burst_bytes: Option<f64>,
    /// queue in front of the rate limit; queue_bytes wins over queue_ms
    pub queue_ms: f64,
    pub queue_bytes: Option<f64>,
    /// let jitter reorder packets (otherwise a packet never leaves before an earlier one of its path)
    pub reorder: bool,
}

impl Default for DirParams {
    fn default() -> Self {
        DirParams {
            delay_ms: 0.0,
            jitter_ms: 0.0,
            jitter_dist: JitterDist::Uniform,
            loss: 0.0,
            rate_mbit: 0.0,
            burst_bytes: None,
            queue_ms: 100.0,
            queue_bytes: None,
            reorder: false,
        }
    }
}

impl DirParams {
    pub fn burst(&self) -> f64 {
        self.burst_bytes.unwrap_or_else(|| (2.0 * 1518.0f64).max(self.rate_mbit * 1e6 / 8.0 * 0.002))
    }
    pub fn queue(&self) -> f64 {
        self.queue_bytes.unwrap_or_else(|| (2.0 * 1518.0f64).max(self.rate_mbit * 1e6 / 8.0 * self.queue_ms / 1e3))
    }
}

/// A shared rate limit for all traffic of one direction (the access link).
#[derive(Clone, Debug, PartialEq)]
pub struct LinkParams {
    pub rate_mbit: f64,
    pub burst_bytes: Option<f64>,
    pub queue_ms: f64,
    pub queue_bytes: Option<f64>,
}

impl LinkParams {
    fn as_dir(&self) -> DirParams {
        DirParams {
            rate_mbit: self.rate_mbit,
            burst_bytes: self.burst_bytes,
            queue_ms: self.queue_ms,
            queue_bytes: self.queue_bytes,
            ..DirParams::default()
        }
    }
    pub fn burst(&self) -> f64 {
        self.as_dir().burst()
    }
    pub fn queue(&self) -> f64 {
        self.as_dir().queue()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Prefix {
    /// IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d), length counted in the 128-bit space
    pub addr: u128,
    pub len: u8,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PathConfig {
    pub name: String,
    pub prefixes: Vec<Prefix>,
    pub dir: [DirParams; 2],
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub inner: String,
    pub outer: String,
    pub seed: u64,
    pub max_packets: usize,
    /// index 0: the default path (no prefixes), then the configured paths
    pub paths: Vec<PathConfig>,
    pub link: [Option<LinkParams>; 2],
    /// ARP and IPv6 ND take the default path (address resolution stays on the local link)
    pub local_resolution: bool,
}

pub fn parse_ip(s: &str) -> Option<u128> {
    if let Ok(a) = s.parse::<std::net::Ipv4Addr>() {
        return Some(u32::from(a) as u128 | 0xffff_0000_0000u128);
    }
    s.parse::<std::net::Ipv6Addr>().ok().map(u128::from)
}

pub fn parse_prefix(s: &str) -> Result<Prefix, String> {
    let (a, l) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let v4 = a.parse::<std::net::Ipv4Addr>().is_ok();
    let addr = parse_ip(a).ok_or_else(|| format!("bad address in prefix '{s}'"))?;
    let max = if v4 { 32 } else { 128 };
    let len: u32 = match l {
        Some(l) => l.parse().map_err(|_| format!("bad prefix length in '{s}'"))?,
        None => max,
    };
    if len > max {
        return Err(format!("prefix length over {max} in '{s}'"));
    }
    let len = if v4 { len + 96 } else { len } as u8;
    Ok(Prefix { addr: addr & mask(len), len, text: s.to_string() })
}

pub fn mask(len: u8) -> u128 {
    if len == 0 { 0 } else { u128::MAX << (128 - len as u32) }
}

const DIR_KEYS: [&str; 9] =
    ["delay_ms", "jitter_ms", "jitter_dist", "loss", "rate_mbit", "burst_bytes", "queue_ms", "queue_bytes", "reorder"];

fn num(v: &Json, key: &str, lo: f64, hi: f64) -> Result<f64, String> {
    match v {
        Json::Num(x) if *x >= lo && *x <= hi => Ok(*x),
        Json::Num(x) => Err(format!("{key} = {x} is outside {lo}..{hi}")),
        other => Err(format!("{key} must be a number, not {}", other.type_name())),
    }
}

/// Apply the direction keys present in `m` onto `p`.
fn apply_dir(p: &mut DirParams, m: &BTreeMap<String, Json>, ctx: &str) -> Result<(), String> {
    for (k, v) in m {
        let key = format!("{ctx}.{k}");
        match k.as_str() {
            "delay_ms" => p.delay_ms = num(v, &key, 0.0, 60_000.0)?,
            "jitter_ms" => p.jitter_ms = num(v, &key, 0.0, 60_000.0)?,
            "loss" => p.loss = num(v, &key, 0.0, 1.0)?,
            "rate_mbit" => p.rate_mbit = num(v, &key, 0.0, 100_000.0)?,
            "burst_bytes" => p.burst_bytes = Some(num(v, &key, 64.0, 1e9)?),
            "queue_ms" => p.queue_ms = num(v, &key, 0.0, 60_000.0)?,
            "queue_bytes" => p.queue_bytes = Some(num(v, &key, 0.0, 1e10)?),
            "reorder" => match v {
                Json::Bool(b) => p.reorder = *b,
                o => return Err(format!("{key} must be true or false, not {}", o.type_name())),
            },
            "jitter_dist" => match v {
                Json::Str(s) if s == "uniform" => p.jitter_dist = JitterDist::Uniform,
                Json::Str(s) if s == "normal" => p.jitter_dist = JitterDist::Normal,
                _ => return Err(format!("{key} must be \"uniform\" or \"normal\"")),
            },
            _ => {}
        }
    }
    Ok(())
}

/// A path-like object: direction keys for both directions, then "up"/"down" objects.
fn resolve_dirs(base: &[DirParams; 2], m: &BTreeMap<String, Json>, ctx: &str, extra: &[&str]) -> Result<[DirParams; 2], String> {
    for k in m.keys() {
        if !DIR_KEYS.contains(&k.as_str()) && k != "up" && k != "down" && !extra.contains(&k.as_str()) {
            return Err(format!("unknown key {ctx}.{k}"));
        }
    }
    let mut out = base.clone();
    for (d, name) in DIR_NAMES.iter().enumerate() {
        apply_dir(&mut out[d], m, ctx)?;
        if let Some(v) = m.get(*name) {
            let sub = v.as_obj().ok_or_else(|| format!("{ctx}.{name} must be an object"))?;
            for k in sub.keys() {
                if !DIR_KEYS.contains(&k.as_str()) {
                    return Err(format!("unknown key {ctx}.{name}.{k}"));
                }
            }
            apply_dir(&mut out[d], sub, &format!("{ctx}.{name}"))?;
        }
    }
    Ok(out)
}

fn resolve_link(m: &BTreeMap<String, Json>) -> Result<[Option<LinkParams>; 2], String> {
    const LINK_KEYS: [&str; 4] = ["rate_mbit", "burst_bytes", "queue_ms", "queue_bytes"];
    for (k, v) in m {
        if k == "up" || k == "down" {
            for kk in v.as_obj().ok_or_else(|| format!("link.{k} must be an object"))?.keys() {
                if !LINK_KEYS.contains(&kk.as_str()) {
                    return Err(format!("unknown key link.{k}.{kk}"));
                }
            }
        } else if !LINK_KEYS.contains(&k.as_str()) {
            return Err(format!("unknown key link.{k}"));
        }
    }
    let dirs = resolve_dirs(&[DirParams::default(), DirParams::default()], m, "link", &[])?;
    Ok([0, 1].map(|d| {
        let p = &dirs[d];
        (p.rate_mbit > 0.0).then(|| LinkParams {
            rate_mbit: p.rate_mbit,
            burst_bytes: p.burst_bytes,
            queue_ms: p.queue_ms,
            queue_bytes: p.queue_bytes,
        })
    }))
}

fn prefixes_of(v: &Json, ctx: &str) -> Result<Vec<Prefix>, String> {
    let items: Vec<&Json> = match v {
        Json::Str(_) => vec![v],
        Json::Arr(a) => a.iter().collect(),
        _ => return Err(format!("{ctx}.prefixes must be a string or an array of strings")),
    };
    items
        .into_iter()
        .map(|x| match x {
            Json::Str(s) => parse_prefix(s),
            _ => Err(format!("{ctx}.prefixes must hold strings")),
        })
        .collect()
}

impl Config {
    pub fn empty() -> Config {
        Config {
            inner: String::new(),
            outer: String::new(),
            seed: 1,
            max_packets: 100_000,
            paths: vec![PathConfig { name: "default".into(), prefixes: vec![], dir: [DirParams::default(), DirParams::default()] }],
            link: [None, None],
            local_resolution: false,
        }
    }

    pub fn from_json(text: &str) -> Result<Config, String> {
        let v = Json::parse(text)?;
        let m = v.as_obj().ok_or("the configuration must be a JSON object")?;
        let mut c = Config::empty();
        for (k, v) in m {
            match k.as_str() {
                "inner" | "outer" => {
                    let Json::Str(s) = v else { return Err(format!("{k} must be a string")) };
                    if k == "inner" { c.inner = s.clone() } else { c.outer = s.clone() }
                }
                "seed" => c.seed = num(v, "seed", 0.0, 9.007e15)? as u64,
                "max_packets" => c.max_packets = num(v, "max_packets", 64.0, 10_000_000.0)? as usize,
                "local_resolution" => match v {
                    Json::Bool(b) => c.local_resolution = *b,
                    o => return Err(format!("local_resolution must be true or false, not {}", o.type_name())),
                },
                "default" | "paths" | "link" | "comment" => {}
                _ => return Err(format!("unknown key {k}")),
            }
        }
        if let Some(d) = m.get("default") {
            let dm = d.as_obj().ok_or("default must be an object")?;
            c.paths[0].dir = resolve_dirs(&c.paths[0].dir, dm, "default", &[])?;
        }
        if let Some(l) = m.get("link") {
            c.link = resolve_link(l.as_obj().ok_or("link must be an object")?)?;
        }
        if let Some(ps) = m.get("paths") {
            let Json::Arr(ps) = ps else { return Err("paths must be an array".into()) };
            for (i, p) in ps.iter().enumerate() {
                let pm = p.as_obj().ok_or_else(|| format!("paths[{i}] must be an object"))?;
                let name = match pm.get("name") {
                    Some(Json::Str(s)) => s.clone(),
                    None => format!("path{}", i + 1),
                    Some(_) => return Err(format!("paths[{i}].name must be a string")),
                };
                let ctx = format!("paths[{i}]");
                let prefixes = prefixes_of(pm.get("prefixes").ok_or_else(|| format!("{ctx}.prefixes is required"))?, &ctx)?;
                if prefixes.is_empty() {
                    return Err(format!("{ctx}.prefixes is empty"));
                }
                let dir = resolve_dirs(&c.paths[0].dir, pm, &ctx, &["name", "prefixes"])?;
                c.paths.push(PathConfig { name, prefixes, dir });
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// `PREFIX[,PREFIX...]@key=value,key=value` (keys as in the JSON file, for both directions;
    /// `up.key=` / `down.key=` for one direction).
    pub fn add_path_spec(&mut self, spec: &str) -> Result<(), String> {
        let (pfx, kv) = spec.split_once('@').ok_or_else(|| format!("--path '{spec}': expected PREFIXES@key=value,..."))?;
        let prefixes = pfx.split(',').map(parse_prefix).collect::<Result<Vec<_>, _>>()?;
        let mut dir = self.paths[0].dir.clone();
        let mut name = format!("path{}", self.paths.len());
        for item in kv.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = item.split_once('=').ok_or_else(|| format!("--path '{spec}': '{item}' is not key=value"))?;
            if k == "name" {
                name = v.to_string();
                continue;
            }
            let (dirs, key): (&[usize], &str) = match k.split_once('.') {
                Some(("up", key)) => (&[UP], key),
                Some(("down", key)) => (&[DOWN], key),
                Some(_) => return Err(format!("--path: unknown key {k}")),
                None => (&[UP, DOWN], k),
            };
            if !DIR_KEYS.contains(&key) {
                return Err(format!("--path: unknown key {k}"));
            }
            let jv = match v {
                "true" => Json::Bool(true),
                "false" => Json::Bool(false),
                _ => v.parse::<f64>().map(Json::Num).unwrap_or_else(|_| Json::Str(v.to_string())),
            };
            let m: BTreeMap<String, Json> = [(key.to_string(), jv)].into_iter().collect();
            for &d in dirs {
                apply_dir(&mut dir[d], &m, "--path")?;
            }
        }
        self.paths.push(PathConfig { name, prefixes, dir });
        self.validate()
    }

    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for p in &self.paths {
            for x in &p.prefixes {
                if !seen.insert((x.addr, x.len)) {
                    return Err(format!("prefix {} is given twice", x.text));
                }
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        fn dirj(p: &DirParams) -> String {
            format!(
                "{{\"delay_ms\":{},\"jitter_ms\":{},\"jitter_dist\":\"{}\",\"loss\":{},\"rate_mbit\":{},\"burst_bytes\":{},\"queue_bytes\":{},\"reorder\":{}}}",
                p.delay_ms,
                p.jitter_ms,
                if p.jitter_dist == JitterDist::Normal { "normal" } else { "uniform" },
                p.loss,
                p.rate_mbit,
                p.burst().round(),
                p.queue().round(),
                p.reorder
            )
        }
        let mut s = format!(
            "{{\"inner\":\"{}\",\"outer\":\"{}\",\"seed\":{},\"max_packets\":{},\"local_resolution\":{},\"link\":{{",
            esc(&self.inner), esc(&self.outer), self.seed, self.max_packets, self.local_resolution
        );
        for d in 0..2 {
            if d == 1 {
                s.push(',');
            }
            match &self.link[d] {
                Some(l) => {
                    let _ = write!(s, "\"{}\":{{\"rate_mbit\":{},\"burst_bytes\":{},\"queue_bytes\":{}}}", DIR_NAMES[d], l.rate_mbit, l.burst().round(), l.queue().round());
                }
                None => {
                    let _ = write!(s, "\"{}\":null", DIR_NAMES[d]);
                }
            }
        }
        s.push_str("},\"paths\":[");
        for (i, p) in self.paths.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let pf: Vec<String> = p.prefixes.iter().map(|x| format!("\"{}\"", esc(&x.text))).collect();
            let _ = write!(s, "{{\"name\":\"{}\",\"prefixes\":[{}],\"up\":{},\"down\":{}}}", esc(&p.name), pf.join(","), dirj(&p.dir[0]), dirj(&p.dir[1]));
        }
        s.push_str("]}");
        s
    }
}

pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inherit_default_then_override_per_direction() {
        let c = Config::from_json(
            r#"{"seed": 9, "default": {"delay_ms": 2, "loss": 0.001},
                "link": {"up": {"rate_mbit": 10}, "down": {"rate_mbit": 50, "queue_ms": 20}},
                "paths": [{"name": "far", "prefixes": ["198.51.100.7", "2001:db8::/32"],
                           "delay_ms": 100, "jitter_ms": 10, "down": {"delay_ms": 120, "rate_mbit": 5}}]}"#,
        )
        .unwrap();
        assert_eq!(c.seed, 9);
        assert_eq!(c.paths.len(), 2);
        let far = &c.paths[1];
        assert_eq!(far.dir[UP].delay_ms, 100.0);
        assert_eq!(far.dir[DOWN].delay_ms, 120.0);
        assert_eq!(far.dir[UP].loss, 0.001); // inherited from default
        assert_eq!(far.dir[DOWN].rate_mbit, 5.0);
        assert_eq!(far.dir[UP].rate_mbit, 0.0);
        assert_eq!(far.prefixes[0].len, 128);
        assert_eq!(far.prefixes[1].len, 32);
        assert_eq!(c.link[UP].as_ref().unwrap().rate_mbit, 10.0);
        assert_eq!(c.link[DOWN].as_ref().unwrap().queue(), 50e6 / 8.0 * 0.02);
        assert!(Json::parse(&c.to_json()).is_ok());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Config::from_json(r#"{"default": {"dealy_ms": 5}}"#).unwrap_err();
        assert!(e.contains("default.dealy_ms"), "{e}");
        let e = Config::from_json(r#"{"paths": [{"prefixes": "10.0.0.1", "loss": 2}]}"#).unwrap_err();
        assert!(e.contains("loss"), "{e}");
        let e = Config::from_json(r#"{"paths": [{"prefixes": "10.0.0.0/33"}]}"#).unwrap_err();
        assert!(e.contains("over 32"), "{e}");
        let e = Config::from_json(r#"{"paths": [{"prefixes": "10.0.0.1"}, {"prefixes": ["10.0.0.1/32"]}]}"#).unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn path_spec_from_command_line() {
        let mut c = Config::empty();
        c.add_path_spec("10.1.0.0/16,fd00::/8@name=lan,delay_ms=20,down.loss=0.5,reorder=true").unwrap();
        let p = &c.paths[1];
        assert_eq!(p.name, "lan");
        assert_eq!(p.dir[UP].loss, 0.0);
        assert_eq!(p.dir[DOWN].loss, 0.5);
        assert!(p.dir[DOWN].reorder);
        assert!(c.add_path_spec("10.2.0.0/16@bogus=1").is_err());
    }
}
