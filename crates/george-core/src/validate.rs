//! Checks a whole set of manifests together: what no single document can show
//! on its own (duplicate names, missing templates or agents, unknown
//! variables, dependency cycles, parameters that do not fit their template).

use crate::manifest::{Diagnostic, Manifest, ParsedManifest, TaskTemplate, TriggerSpec, VarType};
use crate::plan::{Catalog, JobRequest, NewJob, Origin};
use crate::template::{check_value, references, topological_order, StepSpec};
use std::collections::{BTreeMap, BTreeSet};

/// A valid set of manifests, ready to apply.
#[derive(Debug, Clone, Default)]
pub struct ManifestSet {
    /// Every manifest, in file order.
    pub manifests: Vec<ParsedManifest>,
    /// Templates and agents by name.
    pub catalog: Catalog,
    /// The jobs, planned; `origin.reference` is the manifest's file.
    pub jobs: Vec<NewJob>,
}

/// Validates `manifests` as one set.
pub fn validate_set(manifests: Vec<ParsedManifest>) -> Result<ManifestSet, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut seen: BTreeMap<(crate::manifest::Kind, String), &ParsedManifest> = BTreeMap::new();
    let mut catalog = Catalog::default();
    for m in &manifests {
        let key = (m.manifest.kind(), m.manifest.name().to_string());
        if let Some(first) = seen.get(&key) {
            diags.push(m.diagnostic(
                "metadata.name",
                format!("duplicate {} `{}`; first defined in {}:{}", key.0, key.1, first.file, first.line),
            ));
            continue;
        }
        seen.insert(key, m);
        match &m.manifest {
            Manifest::AgentSpec(a) => {
                catalog.agents.insert(a.metadata.name.clone(), a.clone());
            }
            Manifest::TaskTemplate(t) => {
                catalog.templates.insert(t.metadata.name.clone(), t.clone());
            }
            Manifest::Trigger(t) => {
                catalog.triggers.insert(t.metadata.name.clone(), t.spec.clone());
            }
            _ => {}
        }
    }
    catalog.add_agent_triggers();
    for m in &manifests {
        match &m.manifest {
            Manifest::AgentSpec(a) => {
                for (cap, refs) in &a.spec.secrets {
                    for (i, r) in refs.iter().enumerate() {
                        let plain = |s: &str| !s.is_empty() && !s.contains('/') && s != "." && s != "..";
                        let bad = [("name", Some(&r.name)), ("key", r.key.as_ref()), ("path", r.path.as_ref())]
                            .into_iter()
                            .find(|(_, v)| v.is_some_and(|v| !plain(v)));
                        if let Some((field, _)) = bad {
                            diags.push(m.diagnostic(
                                &format!("spec.secrets.{cap}[{i}].{field}"),
                                "must be a plain file name (no `/`, not `.` or `..`)",
                            ));
                        }
                    }
                }
                for (i, t) in a.spec.triggers.iter().enumerate() {
                    let mut t = t.clone();
                    t.agent.get_or_insert_with(|| a.metadata.name.clone());
                    check_trigger(m, &format!("spec.triggers[{i}]"), &t, &catalog, &mut diags);
                }
                if let Some(pool) = &a.spec.pool {
                    let limit = crate::manifest::PoolSpec::LIMIT;
                    if pool.min > limit || pool.max.is_some_and(|m| m > limit) {
                        let field = if pool.min > limit { "spec.pool.min" } else { "spec.pool.max" };
                        diags.push(m.diagnostic(field, format!("must be at most {limit}")));
                    } else if pool.max.is_some_and(|max| max < pool.min) {
                        diags.push(m.diagnostic(
                            "spec.pool.max",
                            format!("must be at least spec.pool.min ({}), got {}", pool.min, pool.max.unwrap_or(0)),
                        ));
                    }
                }
                for cap in a.spec.secrets.keys() {
                    if !a.spec.capabilities.contains(cap) {
                        diags.push(m.diagnostic(
                            &format!("spec.secrets.{cap}"),
                            format!(
                                "secrets for capability `{cap}`, which the agent does not list in spec.capabilities"
                            ),
                        ));
                    }
                }
            }
            Manifest::TaskTemplate(t) => check_template(m, t, &catalog, &mut diags),
            Manifest::Trigger(t) => check_trigger(m, "spec", &t.spec, &catalog, &mut diags),
            _ => {}
        }
    }
    let mut jobs = Vec::new();
    for m in &manifests {
        let Manifest::Job(j) = &m.manifest else { continue };
        if seen.get(&(m.manifest.kind(), j.metadata.name.clone())).is_some_and(|first| !std::ptr::eq(*first, m)) {
            continue;
        }
        let req = JobRequest {
            id: &j.metadata.name,
            template: &j.spec.template,
            params: &j.spec.params,
            agent: j.spec.agent.as_deref(),
            chapter: j.metadata.chapter.as_deref(),
            priority: j.spec.priority,
            desired: j.spec.desired_state,
            env: &j.spec.env,
            parallelism: j.spec.parallelism,
            fail_fast: j.spec.fail_fast,
            labels: &j.metadata.labels,
        };
        let origin = Origin { source: String::new(), reference: Some(m.file.clone()), revision: None };
        match catalog.plan(&req, origin) {
            Ok(job) => jobs.push(job),
            Err(errs) => diags.extend(errs.into_iter().map(|e| m.diagnostic(&format!("spec.{}", e.field), e.message))),
        }
    }
    if diags.is_empty() {
        Ok(ManifestSet { manifests, catalog, jobs })
    } else {
        diags.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        Err(diags)
    }
}

fn check_template(m: &ParsedManifest, t: &TaskTemplate, catalog: &Catalog, diags: &mut Vec<Diagnostic>) {
    let spec = &t.spec;
    if spec.steps.is_empty() {
        diags.push(m.diagnostic("spec.steps", "a template needs at least one step"));
    }
    if spec.parallelism == Some(0) {
        diags.push(m.diagnostic("spec.parallelism", "expected 1 or more steps at once, got 0"));
    }
    let mut var_names = BTreeSet::new();
    for (i, v) in spec.variables.iter().enumerate() {
        let field = format!("spec.variables[{i}]");
        if !var_names.insert(v.name.as_str()) {
            diags.push(m.diagnostic(&format!("{field}.name"), format!("duplicate variable `{}`", v.name)));
        }
        if v.var_type == VarType::Enum && v.values.is_empty() {
            diags.push(m.diagnostic(&format!("{field}.values"), "an enum variable needs a non-empty `values` list"));
        }
        if v.var_type != VarType::Enum && !v.values.is_empty() {
            diags.push(m.diagnostic(&format!("{field}.values"), "`values` is only for enum variables"));
        }
        if let Some(d) = &v.default {
            if let Err(e) = check_value(v, d) {
                diags.push(m.diagnostic(&format!("{field}.default"), e.to_string()));
            }
        }
    }
    let mut step_ids = BTreeSet::new();
    for (i, s) in spec.steps.iter().enumerate() {
        let field = format!("spec.steps[{i}]");
        if s.id.trim().is_empty() {
            diags.push(m.diagnostic(&format!("{field}.id"), "a step id cannot be empty"));
        } else if !step_ids.insert(s.id.as_str()) {
            diags.push(m.diagnostic(&format!("{field}.id"), format!("duplicate step id `{}`", s.id)));
        }
        let texts =
            [("description", Some(&s.description)), ("run", s.run.as_ref()), ("done_when", s.done_when.as_ref())];
        for (name, text) in texts {
            for r in text.map(|t| references(t)).unwrap_or_default() {
                if !var_names.contains(r.as_str()) {
                    diags.push(m.diagnostic(
                        &format!("{field}.{name}"),
                        format!("unknown variable `{{{{{r}}}}}`; declare it under spec.variables"),
                    ));
                }
            }
        }
    }
    for (i, s) in spec.steps.iter().enumerate() {
        for (j, dep) in s.depends_on.iter().enumerate() {
            let field = format!("spec.steps[{i}].depends_on[{j}]");
            if dep == &s.id {
                diags.push(m.diagnostic(&field, format!("step `{dep}` depends on itself")));
            } else if !step_ids.contains(dep.as_str()) {
                diags.push(m.diagnostic(&field, format!("unknown step `{dep}`; steps are [{}]", join(&step_ids))));
            }
        }
    }
    let as_specs: Vec<StepSpec> = spec
        .steps
        .iter()
        .map(|s| StepSpec {
            id: s.id.clone(),
            description: String::new(),
            run: None,
            done_when: None,
            depends_on: s.depends_on.iter().filter(|d| *d != &s.id).cloned().collect(),
            ..Default::default()
        })
        .collect();
    if let Err(cycle) = topological_order(&as_specs) {
        let first = spec.steps.iter().position(|s| s.id == cycle[0]).unwrap_or(0);
        diags.push(m.diagnostic(
            &format!("spec.steps[{first}].depends_on"),
            format!("dependency cycle: {}", cycle.join(" → ")),
        ));
    }
    if let Err(e) = catalog.choose_agent(t, None) {
        let field = if spec.agent.is_some() { "spec.agent" } else { "spec.requiredCapabilities" };
        diags.push(m.diagnostic(field, e.to_string()));
    }
}

fn check_trigger(m: &ParsedManifest, at: &str, t: &TriggerSpec, catalog: &Catalog, diags: &mut Vec<Diagnostic>) {
    use crate::manifest::TriggerType;
    let f = |field: &str| format!("{at}.{field}");
    match t.trigger_type {
        TriggerType::Cron => match &t.schedule {
            None => diags.push(m.diagnostic(&f("schedule"), "a cron trigger needs a schedule, e.g. `0 8 * * 1-5`")),
            Some(s) => {
                if let Err(e) = crate::schedule::CronSchedule::parse(s, t.timezone.as_deref()) {
                    let field =
                        if matches!(e, crate::schedule::ScheduleError::TimeZone(_)) { "timezone" } else { "schedule" };
                    diags.push(m.diagnostic(&f(field), e.to_string()));
                }
            }
        },
        _ => {
            if t.schedule.is_some() || t.timezone.is_some() {
                diags.push(m.diagnostic(&f("schedule"), "`schedule` and `timezone` are for cron triggers"));
            }
        }
    }
    if !t.is_webhook() && (!t.events.is_empty() || !t.conditions.is_empty() || t.source.is_some()) {
        diags.push(m.diagnostic(&f("conditions"), "`source`, `events` and `conditions` are for webhook triggers"));
    }
    if t.debounce.is_none() && (t.debounce_key.is_some() || t.max_delay.is_some()) {
        diags.push(m.diagnostic(&f("debounceKey"), "`debounceKey` and `maxDelay` need `debounce`"));
    }
    if let (Some(d), Some(max)) = (t.debounce, t.max_delay) {
        if max < d {
            diags.push(m.diagnostic(&f("maxDelay"), format!("maxDelay {max} is shorter than debounce {d}")));
        }
    }
    let Some(template_name) = &t.template else {
        diags.push(m.diagnostic(&f("template"), "a trigger needs the `template` of the jobs it creates"));
        return;
    };
    let Some(template) = catalog.templates.get(template_name) else {
        diags.push(m.diagnostic(&f("template"), format!("unknown TaskTemplate `{template_name}`")));
        return;
    };
    if let Err(e) = catalog.choose_agent(template, t.agent.as_deref()) {
        diags.push(m.diagnostic(&f("agent"), e.to_string()));
    }
    for (name, value) in &t.params {
        match template.spec.variables.iter().find(|v| &v.name == name) {
            None => diags.push(m.diagnostic(
                &f(&format!("params.{name}")),
                format!("unknown variable `{name}` of template `{template_name}`"),
            )),
            Some(var) => {
                if let Err(e) = check_value(var, value) {
                    diags.push(m.diagnostic(&f(&format!("params.{name}")), e.to_string()));
                }
            }
        }
    }
}

fn join(set: &BTreeSet<&str>) -> String {
    set.iter().copied().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_manifests;

    const AGENT: &str =
        "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: worker}\nspec:\n  capabilities: [shell]\n";
    const TEMPLATE: &str = "apiVersion: george/v1
kind: TaskTemplate
metadata: {name: count}
spec:
  requiredCapabilities: [shell]
  variables:
    - {name: path, type: string}
    - {name: n, type: integer, default: 2}
  steps:
    - id: write
      description: write {{path}}
      run: echo hi > {{path}}
    - id: check
      description: check
      run: test -f {{path}}
      depends_on: [write]
";
    const JOB: &str =
        "apiVersion: george/v1\nkind: Job\nmetadata: {name: j1}\nspec:\n  template: count\n  params: {path: a.txt}\n";

    fn set(files: &[(&str, &str)]) -> Result<ManifestSet, Vec<Diagnostic>> {
        let mut all = Vec::new();
        for (f, t) in files {
            let (ms, errs) = parse_manifests(f, t);
            assert!(errs.is_empty(), "{errs:?}");
            all.extend(ms);
        }
        validate_set(all)
    }

    #[test]
    fn a_good_set_plans_its_jobs() {
        let s = set(&[("agents/w.yaml", AGENT), ("templates/c.yaml", TEMPLATE), ("jobs/j1.yaml", JOB)]).unwrap();
        assert_eq!(s.jobs.len(), 1);
        let job = &s.jobs[0];
        assert_eq!(job.agent, "worker");
        assert_eq!(job.steps[0].run.as_deref(), Some("echo hi > a.txt"));
        assert_eq!(job.origin.reference.as_deref(), Some("jobs/j1.yaml"));
    }

    #[test]
    fn missing_template_and_bad_params_are_located() {
        let bad = JOB.replace("template: count", "template: nope");
        let errs = set(&[("agents/w.yaml", AGENT), ("jobs/j1.yaml", &bad)]).unwrap_err();
        assert_eq!(errs[0].field, "spec.template");
        assert_eq!(errs[0].line, Some(5));
        assert!(errs[0].message.contains("unknown TaskTemplate `nope`"));

        let bad = JOB.replace("{path: a.txt}", "{path: a.txt, n: many}");
        let errs = set(&[("agents/w.yaml", AGENT), ("t.yaml", TEMPLATE), ("jobs/j1.yaml", &bad)]).unwrap_err();
        assert_eq!(errs[0].field, "spec.params.n");
        assert!(errs[0].message.contains("expected an integer"), "{}", errs[0]);
    }

    #[test]
    fn cycles_unknown_steps_and_unknown_variables_are_errors() {
        let cyclic = TEMPLATE.replace(
            "      description: write {{path}}",
            "      description: write {{path}} {{colour}}\n      depends_on: [check]",
        );
        let errs = set(&[("agents/w.yaml", AGENT), ("t.yaml", &cyclic)]).unwrap_err();
        let msgs: Vec<_> = errs.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
        assert!(msgs.iter().any(|m| m.contains("dependency cycle: write → check → write")), "{msgs:?}");
        assert!(
            msgs.iter().any(|m| m.contains("spec.steps[0].description: unknown variable `{{colour}}`")),
            "{msgs:?}"
        );

        // No step could ever run: refused, for a template and for a job.
        let none_at_once = TEMPLATE.replace("  steps:\n", "  parallelism: 0\n  steps:\n");
        let errs = set(&[("agents/w.yaml", AGENT), ("t.yaml", &none_at_once)]).unwrap_err();
        assert_eq!((errs[0].field.as_str(), errs[0].line), ("spec.parallelism", Some(9)), "{errs:?}");
        assert!(errs[0].message.contains("expected 1 or more"), "{}", errs[0]);
        let job = JOB.replace("  template: count\n", "  template: count\n  parallelism: 0\n");
        let errs = set(&[("agents/w.yaml", AGENT), ("t.yaml", TEMPLATE), ("jobs/j1.yaml", &job)]).unwrap_err();
        assert_eq!((errs[0].field.as_str(), errs[0].line), ("spec.parallelism", Some(6)), "{errs:?}");

        let dangling = TEMPLATE.replace("depends_on: [write]", "depends_on: [wrote]");
        let errs = set(&[("agents/w.yaml", AGENT), ("t.yaml", &dangling)]).unwrap_err();
        assert_eq!(errs[0].field, "spec.steps[1].depends_on[0]");
        assert!(errs[0].message.contains("unknown step `wrote`"));
    }

    #[test]
    fn triggers_are_checked() {
        let trig = |body: &str| format!("apiVersion: george/v1\nkind: Trigger\nmetadata: {{name: tr}}\nspec:\n{body}");
        let ok = trig("  type: cron\n  schedule: 0 8 * * 1-5\n  timezone: America/Los_Angeles\n  template: count\n  params: {path: a.txt}\n");
        let s = set(&[("a.yaml", AGENT), ("t.yaml", TEMPLATE), ("tr.yaml", &ok)]).unwrap();
        assert!(s.catalog.triggers.contains_key("tr"));
        let bad = trig(
            "  type: cron\n  schedule: 0 8 * *\n  timezone: Moon/Base\n  template: count\n  params: {colour: red}\n",
        );
        let errs = set(&[("a.yaml", AGENT), ("t.yaml", TEMPLATE), ("tr.yaml", &bad)]).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"spec.schedule") && fields.contains(&"spec.params.colour"), "{errs:?}");
        let web = trig("  type: webhook\n  template: nope\n  debounceKey: issue.key\n");
        let errs = set(&[("a.yaml", AGENT), ("t.yaml", TEMPLATE), ("tr.yaml", &web)]).unwrap_err();
        let msgs: Vec<_> = errs.iter().map(|e| e.message.as_str()).collect();
        assert!(
            msgs.iter().any(|m| m.contains("need `debounce`"))
                && msgs.iter().any(|m| m.contains("unknown TaskTemplate `nope`")),
            "{msgs:?}"
        );
        // An AgentSpec's own triggers are validated and named after it.
        let agent = AGENT.replace(
            "capabilities: [shell]",
            "capabilities: [shell]\n  triggers:\n    - {type: summon, template: count}",
        );
        let s = set(&[("a.yaml", &agent), ("t.yaml", TEMPLATE)]).unwrap();
        assert_eq!(s.catalog.triggers["worker-t0"].agent.as_deref(), Some("worker"));
    }

    #[test]
    fn a_pool_smaller_than_its_min_or_over_the_limit_is_named() {
        let pool = |p: &str| AGENT.replace("capabilities: [shell]", &format!("capabilities: [shell]\n  pool: {p}"));
        let ok = set(&[("a.yaml", &pool("{min: 2, max: 8, idleTimeout: 1m}")), ("t.yaml", TEMPLATE)]).unwrap();
        let p = ok.catalog.agents["worker"].spec.pool.unwrap();
        assert_eq!((p.min, p.upper(), p.idle().as_secs()), (2, 8, 60));
        let errs = set(&[("a.yaml", &pool("{min: 4, max: 2}")), ("t.yaml", TEMPLATE)]).unwrap_err();
        assert_eq!(errs[0].field, "spec.pool.max", "{errs:?}");
        assert!(errs[0].message.contains("at least spec.pool.min (4), got 2"), "{}", errs[0]);
        let errs = set(&[("a.yaml", &pool("{min: 1000}")), ("t.yaml", TEMPLATE)]).unwrap_err();
        assert!(errs[0].message.contains("at most 256"), "{}", errs[0]);
    }

    #[test]
    fn duplicates_and_missing_capabilities_are_errors() {
        let errs = set(&[("a.yaml", AGENT), ("b.yaml", AGENT)]).unwrap_err();
        assert_eq!(errs[0].file, "b.yaml");
        assert!(errs[0].message.contains("duplicate AgentSpec `worker`; first defined in a.yaml:1"), "{}", errs[0]);

        let needs_git = TEMPLATE.replace("[shell]", "[shell, git]");
        let errs = set(&[("agents/w.yaml", AGENT), ("t.yaml", &needs_git)]).unwrap_err();
        assert_eq!(errs[0].field, "spec.requiredCapabilities");
        assert!(errs[0].message.contains("no AgentSpec has all required capabilities"));
    }
}
