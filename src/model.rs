//! The scorer: an ONNX model run with tract, following the model contract of DESIGN.md.
//!
//! Input `features` f32 [batch, F], output `score` f32 [batch, 1] and optionally `class` f32
//! [batch, C]; metadata `edgewatch.feature_schema`, `edgewatch.classes`, `edgewatch.threshold`,
//! `edgewatch.version`. The model is checked once at load, optimized once with a symbolic batch
//! size, and then run many times. This module scores vectors; it does not build them.

use std::collections::HashMap;
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use crate::features::{FEATURE_COUNT, schema_id};

/// The model shipped inside the binary.
pub const EMBEDDED_MODEL: &[u8] = include_bytes!("../models/edgewatch-default.onnx");

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("model {origin} is not a valid ONNX model: {detail}")]
    NotOnnx { origin: String, detail: String },
    #[error(
        "model {origin} was trained on feature schema {found}, this agent computes {expected}: \
         retrain or re-export it with models/train.py from features made by this version"
    )]
    SchemaMismatch {
        origin: String,
        found: String,
        expected: String,
    },
    #[error(
        "model {origin} has no edgewatch.feature_schema metadata: export it with models/train.py"
    )]
    NoSchema { origin: String },
    #[error("model {origin}: {detail}")]
    Contract { origin: String, detail: String },
    #[error("model {origin} cannot run: {detail}")]
    Runtime { origin: String, detail: String },
}

/// What the model's metadata says.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    /// Where it came from: a path, or "embedded".
    pub origin: String,
    pub name: String,
    pub version: String,
    pub schema: String,
    pub classes: Vec<String>,
    pub threshold: f32,
}

/// The score of one flow.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    pub anomaly: f32,
    /// Index into [`ModelInfo::classes`] of the most likely class, when the model has a class head.
    pub class: Option<usize>,
}

type Plan = Arc<TypedRunnableModel>;

pub struct Scorer {
    plan: Plan,
    /// One tract session reused for every batch: a fresh one per batch allocates every node's
    /// state again and makes each matrix product rebuild its output layout (tract keys that
    /// cache by session). Boxed: a session is a few hundred bytes, and a `Scorer` is moved
    /// around by value.
    state: Box<TypedSimpleState>,
    info: ModelInfo,
    has_class: bool,
}

fn metadata(model: &InferenceModel) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (key, value) in &model.properties {
        if let Some(k) = key.strip_prefix("onnx.metadata_props.")
            && let Ok(s) = value
                .try_as_plain_ram()
                .and_then(|v| v.to_scalar::<String>().cloned())
        {
            out.insert(k.to_string(), s);
        }
    }
    out
}

/// Tells tract that the core has one 512-bit FMA port, unless `TRACT_AVX512_FMA_UNITS` in the
/// environment says otherwise (it takes precedence over this default).
///
/// On a CPU with AVX-512 VNNI, tract otherwise times a loop of 512-bit against 256-bit integer
/// products at every start before choosing its int8 kernel (`edgewatch validate` took 19.8-25.0
/// ms with the probe, 17.6-17.9 ms without), and the core runs at its lower AVX-512 clock for a
/// while after. The answer only matters on a server core with two such ports, where tract would
/// take its 16x16 zmm kernel for products at least 16 wide; the model's layers are 64 wide at
/// most and run on the 8x8 ymm kernel that every other VNNI core gets.
fn skip_fma_probe() {
    // Fails only when a different value was set before, which nothing else here does.
    let _ = tract_onnx::tract_core::knobs::set_config_global("TRACT_AVX512_FMA_UNITS", "1");
}

impl Scorer {
    /// Loads the model at `path`, or the embedded one when `path` is empty.
    pub fn load(path: &str) -> Result<Scorer, ModelError> {
        if path.is_empty() {
            return Scorer::from_bytes(EMBEDDED_MODEL, "embedded");
        }
        let bytes = std::fs::read(path).map_err(|source| ModelError::Read {
            path: path.to_string(),
            source,
        })?;
        Scorer::from_bytes(&bytes, path)
    }

    /// Reads, checks and optimizes a model. A model that makes tract panic is an unusable model
    /// like any other (a panic is caught where panics unwind: every host build; a router build
    /// aborts).
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Scorer, ModelError> {
        std::panic::catch_unwind(|| Scorer::from_bytes_unguarded(bytes, origin)).unwrap_or_else(
            |panic| {
                let detail = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "tract panicked".to_string());
                Err(ModelError::Runtime {
                    origin: origin.to_string(),
                    detail: format!("tract failed on it: {detail}"),
                })
            },
        )
    }

    fn from_bytes_unguarded(bytes: &[u8], origin: &str) -> Result<Scorer, ModelError> {
        skip_fma_probe();
        let o = || origin.to_string();
        let mut model = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .map_err(|e| ModelError::NotOnnx {
                origin: o(),
                detail: format!("{e:#}"),
            })?;
        let meta = metadata(&model);
        let schema = meta
            .get("edgewatch.feature_schema")
            .cloned()
            .ok_or(ModelError::NoSchema { origin: o() })?;
        if schema != schema_id() {
            return Err(ModelError::SchemaMismatch {
                origin: o(),
                found: schema,
                expected: schema_id().to_string(),
            });
        }
        let contract = |detail: String| ModelError::Contract {
            origin: o(),
            detail,
        };
        let threshold = match meta.get("edgewatch.threshold") {
            None => 0.5,
            Some(t) => t
                .trim()
                .parse::<f32>()
                .ok()
                .filter(|t| (0.0..=1.0).contains(t))
                .ok_or_else(|| {
                    contract(format!(
                        "edgewatch.threshold {t:?} is not a number between 0 and 1"
                    ))
                })?,
        };
        let classes: Vec<String> = meta
            .get("edgewatch.classes")
            .map(|c| {
                c.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();

        // Inputs and outputs by name.
        let inputs = model
            .input_outlets()
            .map_err(|e| contract(e.to_string()))?
            .to_vec();
        if inputs.len() != 1 || model.node(inputs[0].node).name != "features" {
            let names: Vec<_> = inputs
                .iter()
                .map(|i| model.node(i.node).name.clone())
                .collect();
            return Err(contract(format!(
                "expects one input named \"features\", found {names:?}"
            )));
        }
        if let Ok(fact) = model.input_fact(0)
            && let Some(width) = fact
                .shape
                .dims()
                .nth(1)
                .and_then(|d| d.concretize())
                .and_then(|d| d.as_i64())
                .map(|d| d as usize)
            && width != FEATURE_COUNT
        {
            return Err(contract(format!(
                "expects {width} features, the feature schema has {FEATURE_COUNT}: \
                         re-export the model with models/train.py"
            )));
        }
        let output_names: Vec<String> = model
            .output_outlets()
            .map_err(|e| contract(e.to_string()))?
            .iter()
            .map(|o| {
                model
                    .outlet_label(*o)
                    .map(str::to_string)
                    .unwrap_or_else(|| model.node(o.node).name.clone())
            })
            .collect();
        if !output_names.iter().any(|n| n == "score") {
            return Err(contract(format!(
                "has no output named \"score\" (outputs: {output_names:?})"
            )));
        }
        let has_class = output_names.iter().any(|n| n == "class");
        if has_class && classes.is_empty() {
            return Err(contract(
                "has a \"class\" output but no edgewatch.classes metadata".into(),
            ));
        }
        let wanted: Vec<&str> = if has_class {
            vec!["score", "class"]
        } else {
            vec!["score"]
        };
        let runtime = |e: TractError| ModelError::Runtime {
            origin: o(),
            detail: format!("{e:#}"),
        };
        model.select_outputs_by_name(&wanted).map_err(runtime)?;
        let batch = model.symbols.sym("N");
        model
            .set_input_fact(
                0,
                InferenceFact::dt_shape(
                    f32::datum_type(),
                    tvec!(batch.to_dim(), FEATURE_COUNT.to_dim()),
                ),
            )
            .map_err(runtime)?;
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(runtime)?;

        let info = ModelInfo {
            origin: o(),
            name: meta
                .get("edgewatch.name")
                .cloned()
                .unwrap_or_else(|| "edgewatch".to_string()),
            version: meta
                .get("edgewatch.version")
                .cloned()
                .unwrap_or_else(|| "unversioned".to_string()),
            schema,
            classes,
            threshold,
        };
        let state = Box::new(plan.spawn().map_err(runtime)?);
        let mut scorer = Scorer {
            plan,
            state,
            info,
            has_class,
        };
        // Run once so a graph that loads but cannot compute fails now, not on the first flow.
        scorer
            .score(&[0.0; FEATURE_COUNT])
            .map_err(|e| ModelError::Runtime {
                origin: o(),
                detail: e,
            })?;
        Ok(scorer)
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Scores `rows` feature vectors laid out one after the other.
    pub fn score(&mut self, rows: &[f32]) -> Result<Vec<Score>, String> {
        let n = rows.len() / FEATURE_COUNT;
        if n == 0 {
            return Ok(Vec::new());
        }
        let input = Tensor::from_shape(&[n, FEATURE_COUNT], &rows[..n * FEATURE_COUNT])
            .map_err(|e| e.to_string())?;
        let outputs = match self.state.run(tvec!(input.into_tvalue())) {
            Ok(outputs) => outputs,
            Err(e) => {
                // A failed run can leave values of that batch behind: start a new session.
                if let Ok(fresh) = self.plan.spawn() {
                    *self.state = fresh;
                }
                return Err(format!("{e:#}"));
            }
        };
        let scores = outputs[0]
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>())
            .map_err(|e| e.to_string())?;
        if scores.len() != n {
            return Err(format!(
                "score output has {} values for {n} rows",
                scores.len()
            ));
        }
        let classes = if self.has_class {
            let c = outputs[1]
                .try_as_plain_ram()
                .and_then(|v| v.as_slice::<f32>())
                .map_err(|e| e.to_string())?;
            let width = c.len() / n;
            if width != self.info.classes.len() {
                return Err(format!(
                    "class output has {width} columns, edgewatch.classes names {}",
                    self.info.classes.len()
                ));
            }
            Some((c, width))
        } else {
            None
        };
        Ok((0..n)
            .map(|i| Score {
                anomaly: if scores[i].is_finite() {
                    scores[i].clamp(0.0, 1.0)
                } else {
                    0.0
                },
                class: classes.map(|(c, w)| {
                    let row = &c[i * w..(i + 1) * w];
                    (0..w).fold(0, |best, j| if row[j] > row[best] { j } else { best })
                }),
            })
            .collect())
    }
}
