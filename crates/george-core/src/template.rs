//! Template variables: type-checking a job's parameters and interpolating
//! `{{name}}` into step text.

use crate::manifest::{StepTemplate, TaskTemplateSpec, VarType, Variable};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// A step of a job: its template step with the job's parameters filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StepSpec {
    /// Unique within the job.
    pub id: String,
    /// What to do.
    pub description: String,
    /// Shell command that does the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Shell command whose exit code 0 means the step is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_when: Option<String>,
    /// Steps that must complete first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Longest a `run` may take, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Extra tries of a failing `run`.
    #[serde(default)]
    pub retries: u32,
    /// The wait before the first retry, in milliseconds (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay_ms: Option<u64>,
    /// The longest wait between two tries, in milliseconds (default 300000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay_max_ms: Option<u64>,
}

/// The wait before the first retry when a step sets none.
pub const DEFAULT_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest wait between two tries when a step sets none.
pub const DEFAULT_RETRY_DELAY_MAX: std::time::Duration = std::time::Duration::from_secs(300);

impl StepSpec {
    /// The wait after failed try `n` (1-based) before the next: the delay
    /// doubled per try, capped, scaled by `jitter` (in `0.0..=1.0`) into its
    /// upper half, so retries of many jobs do not fire together.
    pub fn retry_wait(&self, n: u32, jitter: f64) -> std::time::Duration {
        let base = self.retry_delay_ms.map_or(DEFAULT_RETRY_DELAY, std::time::Duration::from_millis);
        let cap = self.retry_delay_max_ms.map_or(DEFAULT_RETRY_DELAY_MAX, std::time::Duration::from_millis);
        let doubled = base.saturating_mul(1u32 << n.saturating_sub(1).min(20)).min(cap);
        doubled.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// A parameter that does not fit the template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ParamError {
    /// Field path relative to the job spec, e.g. `params.count`.
    pub field: String,
    /// What is wrong and what was expected.
    pub message: String,
}

fn param_error(name: &str, message: String) -> ParamError {
    ParamError { field: format!("params.{name}"), message }
}

/// A value that does not fit its variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, got {got}")]
pub struct ValueMismatch {
    /// What the variable takes.
    pub expected: String,
    /// The value given, as JSON.
    pub got: String,
}

/// Checks `value` against `var`, returning its canonical text.
pub fn check_value(var: &Variable, value: &Value) -> Result<String, ValueMismatch> {
    let mismatch = |expected: String| ValueMismatch { expected, got: value.to_string() };
    match var.var_type {
        VarType::String | VarType::Fuzzy => match value {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) if var.var_type == VarType::Fuzzy => Ok(n.to_string()),
            Value::Bool(b) if var.var_type == VarType::Fuzzy => Ok(b.to_string()),
            _ => Err(mismatch(format!("{} text", var.var_type.as_str()))),
        },
        VarType::Integer => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
            _ => Err(mismatch("an integer".into())),
        },
        VarType::Boolean => match value {
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(mismatch("true or false".into())),
        },
        VarType::Enum => match value {
            Value::String(s) if var.values.contains(s) => Ok(s.clone()),
            _ => Err(mismatch(format!("one of [{}]", var.values.join(", ")))),
        },
    }
}

/// Resolves a job's parameters against a template's variables: every required
/// variable set, every value of the right type, no undeclared names. Returns
/// each variable's text value, defaults included.
pub fn resolve_params(
    spec: &TaskTemplateSpec,
    params: &BTreeMap<String, Value>,
) -> Result<BTreeMap<String, String>, Vec<ParamError>> {
    let mut errors = Vec::new();
    let mut values = BTreeMap::new();
    for name in params.keys() {
        if !spec.variables.iter().any(|v| &v.name == name) {
            let known: Vec<_> = spec.variables.iter().map(|v| v.name.as_str()).collect();
            errors.push(param_error(
                name,
                format!("unknown variable `{name}`; the template declares [{}]", known.join(", ")),
            ));
        }
    }
    for var in &spec.variables {
        match params.get(&var.name).or(var.default.as_ref()) {
            Some(Value::Null) | None if var.is_required() => {
                errors.push(param_error(&var.name, format!("required {} variable is missing", var.var_type.as_str())))
            }
            Some(Value::Null) | None => {
                values.insert(var.name.clone(), String::new());
            }
            Some(v) => match check_value(var, v) {
                Ok(text) => {
                    values.insert(var.name.clone(), text);
                }
                Err(e) => errors.push(param_error(&var.name, e.to_string())),
            },
        }
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(errors)
    }
}

/// The names referenced as `{{name}}` in `text`, in order.
pub fn references(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push(after[..end].trim().to_string());
        rest = &after[end + 2..];
    }
    out
}

/// How a value is written into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    /// As is (descriptions).
    Plain,
    /// Quoted for a POSIX shell when it holds anything but safe characters
    /// (`run` and `done_when`), so a parameter can never inject a command.
    Shell,
}

/// Replaces every `{{name}}` with its value. Unknown names are left as written
/// (validation reports them before anything is rendered).
pub fn interpolate(text: &str, values: &BTreeMap<String, String>, quoting: Quoting) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push_str(&rest[..start]);
        let name = after[..end].trim();
        match values.get(name) {
            Some(v) if quoting == Quoting::Shell => out.push_str(&shell_quote(v)),
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Quotes `s` for a POSIX shell unless it is made only of safe characters.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | '=' | '@' | '%' | '+' | ',')
        });
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn millis(d: Option<crate::duration::HumanDuration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.get().as_millis()).unwrap_or(u64::MAX))
}

/// Renders a template's steps with resolved values.
pub fn render_steps(steps: &[StepTemplate], values: &BTreeMap<String, String>) -> Vec<StepSpec> {
    steps
        .iter()
        .map(|s| StepSpec {
            id: s.id.clone(),
            description: interpolate(&s.description, values, Quoting::Plain),
            run: s.run.as_deref().map(|r| interpolate(r, values, Quoting::Shell)),
            done_when: s.done_when.as_deref().map(|r| interpolate(r, values, Quoting::Shell)),
            depends_on: s.depends_on.clone(),
            timeout_secs: s.timeout.map(|t| t.get().as_secs().max(1)),
            retries: s.retries,
            retry_delay_ms: millis(s.retry_delay),
            retry_delay_max_ms: millis(s.retry_delay_max),
        })
        .collect()
}

/// Orders steps so that every step comes after the steps it depends on,
/// keeping template order otherwise. Returns the ids of a cycle if there is one.
pub fn topological_order(steps: &[StepSpec]) -> Result<Vec<usize>, Vec<String>> {
    let index: BTreeMap<&str, usize> = steps.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
    let mut state = vec![0u8; steps.len()]; // 0 new, 1 visiting, 2 done
    let mut order = Vec::with_capacity(steps.len());
    fn visit(
        i: usize,
        steps: &[StepSpec],
        index: &BTreeMap<&str, usize>,
        state: &mut [u8],
        order: &mut Vec<usize>,
        stack: &mut Vec<usize>,
    ) -> Result<(), Vec<String>> {
        match state[i] {
            2 => return Ok(()),
            1 => {
                let from = stack.iter().position(|&s| s == i).unwrap_or(0);
                let mut cycle: Vec<String> = stack[from..].iter().map(|&s| steps[s].id.clone()).collect();
                cycle.push(steps[i].id.clone());
                return Err(cycle);
            }
            _ => {}
        }
        state[i] = 1;
        stack.push(i);
        for dep in &steps[i].depends_on {
            if let Some(&d) = index.get(dep.as_str()) {
                visit(d, steps, index, state, order, stack)?;
            }
        }
        stack.pop();
        state[i] = 2;
        order.push(i);
        Ok(())
    }
    let mut stack = Vec::new();
    for i in 0..steps.len() {
        visit(i, steps, &index, &mut state, &mut order, &mut stack)?;
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn var(name: &str, t: VarType) -> Variable {
        Variable { name: name.into(), var_type: t, required: None, default: None, values: vec![], description: None }
    }

    fn spec(vars: Vec<Variable>) -> TaskTemplateSpec {
        TaskTemplateSpec {
            description: None,
            agent: None,
            required_capabilities: vec![],
            variables: vars,
            max_attempts: None,
            retention: None,
            parallelism: None,
            fail_fast: None,
            steps: vec![],
        }
    }

    #[test]
    fn params_are_type_checked() {
        let mut level = var("level", VarType::Enum);
        level.values = vec!["low".into(), "high".into()];
        let mut count = var("count", VarType::Integer);
        count.default = Some(json!(3));
        let s = spec(vec![
            var("path", VarType::String),
            count,
            var("dry", VarType::Boolean),
            level,
            var("note", VarType::Fuzzy),
        ]);

        let ok = resolve_params(
            &s,
            &BTreeMap::from([
                ("path".into(), json!("a.txt")),
                ("dry".into(), json!(true)),
                ("level".into(), json!("low")),
                ("note".into(), json!(42)),
            ]),
        )
        .unwrap();
        assert_eq!(ok["count"], "3");
        assert_eq!(ok["note"], "42");

        let errs = resolve_params(
            &s,
            &BTreeMap::from([
                ("count".into(), json!("three")),
                ("dry".into(), json!("yes")),
                ("level".into(), json!("medium")),
                ("bogus".into(), json!(1)),
            ]),
        )
        .unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["params.bogus", "params.path", "params.count", "params.dry", "params.level", "params.note"]
        );
        assert!(errs[4].message.contains("[low, high]"), "{}", errs[4]);
    }

    #[test]
    fn interpolation_quotes_values_in_commands_only() {
        let values =
            BTreeMap::from([("p".to_string(), "a b; rm -rf /".to_string()), ("n".to_string(), "x.txt".to_string())]);
        assert_eq!(interpolate("wc -l {{ p }} {{n}}", &values, Quoting::Shell), "wc -l 'a b; rm -rf /' x.txt");
        assert_eq!(interpolate("count {{p}}", &values, Quoting::Plain), "count a b; rm -rf /");
        assert_eq!(interpolate("{{missing}} {{n", &values, Quoting::Plain), "{{missing}} {{n");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(references("{{a}} and {{ b }}"), ["a", "b"]);
    }

    #[test]
    fn topological_order_respects_dependencies_and_finds_cycles() {
        let step = |id: &str, deps: &[&str]| StepSpec {
            id: id.into(),
            description: String::new(),
            run: None,
            done_when: None,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        };
        let steps = vec![step("c", &["b"]), step("a", &[]), step("b", &["a"])];
        let order: Vec<_> = topological_order(&steps).unwrap().into_iter().map(|i| steps[i].id.as_str()).collect();
        assert_eq!(order, ["a", "b", "c"]);
        let cyclic = vec![step("x", &["y"]), step("y", &["x"])];
        assert_eq!(topological_order(&cyclic).unwrap_err(), ["x", "y", "x"]);
    }

    /// The retry schedule: the delay doubles per try up to the cap; jitter
    /// scales each wait into its upper half, never above the cap.
    #[test]
    fn retry_waits_double_up_to_the_cap_with_jitter() {
        let step = StepSpec { retry_delay_ms: Some(1000), retry_delay_max_ms: Some(5000), ..Default::default() };
        let ms = |jitter: f64| (1..=6).map(|n| step.retry_wait(n, jitter).as_millis()).collect::<Vec<_>>();
        assert_eq!(ms(1.0), [1000, 2000, 4000, 5000, 5000, 5000]);
        assert_eq!(ms(0.0), [500, 1000, 2000, 2500, 2500, 2500]);
        assert_eq!(ms(0.5), [750, 1500, 3000, 3750, 3750, 3750]);
        let default = StepSpec::default();
        assert_eq!(default.retry_wait(1, 1.0), DEFAULT_RETRY_DELAY);
        assert_eq!(default.retry_wait(40, 1.0), DEFAULT_RETRY_DELAY_MAX, "no overflow after many tries");
    }
}
