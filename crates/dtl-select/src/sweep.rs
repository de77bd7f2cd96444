//! Sweep specs: a base run config, the keys to vary (grids, and seeded random searches), and the
//! seeds, expanded into planned runs with stable ids. Running them is the application's job
//! (`dtl sweep`); this module only plans.
//!
//! ```toml
//! seeds = [0, 1]
//!
//! [base]                        # any keys of a run's config.toml
//! data = { source = "mnist-small", target = "optdigits", image_size = 16 }
//! train = { epochs = 3, batch_size = 32 }
//!
//! [[grid]]                      # every combination of the lists
//! "strategy.name" = ["dann"]
//! "strategy.max-coeff" = [0.1, 1.0]
//! "optim.lr" = [0.01, 0.05]
//!
//! [[random]]                    # `trials` draws, each key from its list or range
//! trials = 4
//! seed = 0
//! "strategy.name" = ["coral"]
//! "strategy.lambda" = { log-uniform = [1.0, 100.0] }
//! ```
//!
//! Ranges are `{ uniform = [a, b] }`, `{ log-uniform = [a, b] }` (a > 0) and
//! `{ int-uniform = [a, b] }` (both ends included); a list draws one of its values.

use dtl_core::config::{Table, Value};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::{config, Result};

/// A sweep spec as read from TOML.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// The run seeds; every setting runs once per seed.
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// The run config every run starts from (the tree of a run's `config.toml`).
    #[serde(default)]
    pub base: Table,
    /// Grids: every combination of each block's lists.
    #[serde(default)]
    pub grid: Vec<Table>,
    /// Seeded random searches.
    #[serde(default)]
    pub random: Vec<Table>,
    /// Resources of each run when the sweep goes to a Slurm cluster (`dtl sweep --backend
    /// slurm`; flags override them).
    #[serde(default)]
    pub slurm: SlurmResources,
}

/// `[slurm]` of a sweep spec: what each run asks the scheduler for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SlurmResources {
    /// The partition (`sbatch --partition`); unset: the cluster's default.
    pub partition: Option<String>,
    /// The time limit of each run (`--time`, Slurm's formats: `30`, `1:00:00`, `1-00:00:00`).
    pub time: Option<String>,
    /// CPUs per run (`--cpus-per-task`, and the run's threads); unset: 1.
    pub cpus_per_run: Option<usize>,
    /// GPUs per run (`--gpus-per-task`); unset: none.
    pub gpus_per_run: Option<usize>,
    /// Memory per run (`--mem`, e.g. `8G`); unset: the cluster's default.
    pub mem: Option<String>,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

/// One run of a sweep: the keys it sets on the base config, and its seed.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    /// A stable id: position in the sweep, strategy and seed (`r003-dann-s1`).
    pub id: String,
    /// The keys the sweep sets, `strategy.name` first, then in the spec's order; the seed last
    /// as `train.seed`.
    pub assignments: Vec<(String, Value)>,
}

impl PlannedRun {
    /// The varied settings as `key = value` text (the seed included).
    pub fn settings(&self) -> Vec<(String, String)> {
        self.assignments
            .iter()
            .map(|(k, v)| (k.clone(), value_text(v)))
            .collect()
    }
}

/// A value as it reads in a table: strings bare, everything else as TOML writes it.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl SweepSpec {
    /// Reads a spec from TOML text; `what` names it in errors.
    pub fn from_toml(text: &str, what: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| config(what, e.to_string()))
    }

    /// Every run, grids first, then random searches, each setting once per seed.
    pub fn expand(&self) -> Result<Vec<PlannedRun>> {
        if self.seeds.is_empty() {
            return Err(config("seeds", "a sweep needs at least one seed"));
        }
        if self.grid.is_empty() && self.random.is_empty() {
            return Err(config("grid", "a sweep needs a [[grid]] or a [[random]] block"));
        }
        let mut settings: Vec<Vec<(String, Value)>> = Vec::new();
        for (b, block) in self.grid.iter().enumerate() {
            let mut combos: Vec<Vec<(String, Value)>> = vec![Vec::new()];
            for (key, values) in ordered(block) {
                let Value::Array(values) = values else {
                    return Err(config(
                        &format!("grid[{b}].{key}"),
                        "a grid key takes a list of values",
                    ));
                };
                if values.is_empty() {
                    return Err(config(&format!("grid[{b}].{key}"), "an empty list makes no runs"));
                }
                let mut next = Vec::with_capacity(combos.len() * values.len());
                for c in &combos {
                    for v in &values {
                        let mut c = c.clone();
                        c.push((key.clone(), v.clone()));
                        next.push(c);
                    }
                }
                combos = next;
            }
            settings.extend(combos);
        }
        for (b, block) in self.random.iter().enumerate() {
            let mut block = block.clone();
            let trials = take_int(&mut block, "trials", b)?.unwrap_or(1);
            let seed = take_int(&mut block, "seed", b)?.unwrap_or(0) as u64;
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for _ in 0..trials {
                let mut draw = Vec::new();
                for (key, spec) in ordered(&block) {
                    draw.push((
                        key.clone(),
                        sample(&spec, &mut rng, &format!("random[{b}].{key}"))?,
                    ));
                }
                settings.push(draw);
            }
        }
        let mut runs = Vec::new();
        for s in settings {
            for &seed in &self.seeds {
                let name = s
                    .iter()
                    .find(|(k, _)| k == "strategy.name")
                    .map(|(_, v)| value_text(v))
                    .or_else(|| {
                        self.base
                            .get("strategy")
                            .and_then(|t| t.get("name"))
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .unwrap_or_else(|| "source-only".into());
                let mut assignments = s.clone();
                assignments.push(("train.seed".into(), Value::Integer(seed as i64)));
                runs.push(PlannedRun {
                    id: format!("r{:03}-{name}-s{seed}", runs.len()),
                    assignments,
                });
            }
        }
        Ok(runs)
    }
}

/// A block's keys, `strategy.name` first (choosing a strategy resets its settings, so it must
/// come before them), the others in the table's order.
fn ordered(block: &Table) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = block.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by_key(|(k, _)| k != "strategy.name");
    v
}

fn take_int(block: &mut Table, key: &str, b: usize) -> Result<Option<usize>> {
    match block.remove(key) {
        None => Ok(None),
        Some(Value::Integer(n)) if n >= 0 => Ok(Some(n as usize)),
        Some(other) => Err(config(
            &format!("random[{b}].{key}"),
            format!("a non-negative integer, not {other}"),
        )),
    }
}

/// One draw of `spec`: a value of a list, or from a range.
fn sample(spec: &Value, rng: &mut ChaCha8Rng, key: &str) -> Result<Value> {
    match spec {
        Value::Array(values) if !values.is_empty() => Ok(values[rng.random_range(0..values.len())].clone()),
        Value::Table(t) if t.len() == 1 => {
            let (kind, range) = t.iter().next().expect("one entry");
            let bounds: Vec<f64> = match range {
                Value::Array(a) if a.len() == 2 => a
                    .iter()
                    .map(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
                    .collect::<Option<Vec<f64>>>()
                    .ok_or_else(|| config(key, "a range's ends are numbers"))?,
                _ => return Err(config(key, "a range is [low, high]")),
            };
            let (lo, hi) = (bounds[0], bounds[1]);
            if lo.is_nan() || hi.is_nan() || lo > hi {
                return Err(config(key, format!("the range [{lo}, {hi}] is empty")));
            }
            match kind.as_str() {
                "uniform" => Ok(Value::Float(rng.random_range(lo..=hi))),
                "log-uniform" if lo > 0.0 => Ok(Value::Float(rng.random_range(lo.ln()..=hi.ln()).exp())),
                "log-uniform" => Err(config(key, "log-uniform needs a positive low end")),
                "int-uniform" => Ok(Value::Integer(rng.random_range(lo as i64..=hi as i64))),
                other => Err(config(
                    key,
                    format!("`{other}` is not a range (uniform, log-uniform, int-uniform)"),
                )),
            }
        }
        _ => Err(config(
            key,
            "a random key takes a list or one range ({ uniform = [a, b] }, ...)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_are_products_and_random_draws_are_seeded() {
        let spec = SweepSpec::from_toml(
            r#"
seeds = [0, 1]
[base]
train = { epochs = 2 }
[[grid]]
"optim.lr" = [0.01, 0.05]
"strategy.name" = ["dann"]
"strategy.max-coeff" = [0.1, 0.5, 1.0]
[[random]]
trials = 3
seed = 7
"strategy.name" = ["coral"]
"strategy.lambda" = { log-uniform = [1.0, 100.0] }
"train.batch_size" = { int-uniform = [16, 64] }
"#,
            "spec",
        )
        .unwrap();
        let runs = spec.expand().unwrap();
        assert_eq!(runs.len(), (2 * 3 + 3) * 2);
        assert_eq!(runs[0].id, "r000-dann-s0");
        assert_eq!(runs[1].id, "r001-dann-s1");
        assert_eq!(
            runs[0].assignments[0].0, "strategy.name",
            "the strategy comes first"
        );
        assert_eq!(
            runs[0].assignments.last().unwrap(),
            &("train.seed".to_string(), Value::Integer(0))
        );
        let coral: Vec<&PlannedRun> = runs.iter().filter(|r| r.id.contains("coral")).collect();
        assert_eq!(coral.len(), 6);
        for r in &coral {
            let lambda = r
                .assignments
                .iter()
                .find(|(k, _)| k == "strategy.lambda")
                .unwrap()
                .1
                .as_float()
                .unwrap();
            assert!((1.0..=100.0).contains(&lambda), "{lambda}");
        }
        // The same spec plans the same runs.
        assert_eq!(spec.expand().unwrap(), runs);
        let err = SweepSpec::from_toml("[[grid]]\n\"optim.lr\" = 0.1\n", "spec")
            .unwrap()
            .expand()
            .unwrap_err()
            .to_string();
        assert!(err.contains("grid[0].optim.lr") && err.contains("list"), "{err}");
        assert!(SweepSpec::from_toml("grids = []", "spec").is_err());
    }
}
