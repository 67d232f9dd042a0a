//! The handlebars templates, embedded at compile time, and the one registry that renders
//! them: strict (a missing variable is an error, never an empty string) and without HTML
//! escaping (the output is JSON and YAML, not HTML).
//!
//! Handlebars' strict mode only guards plain `{{variable}}` expressions: a helper parameter
//! or a block condition that names nothing quietly becomes null, false or an empty loop. So
//! the three constructs our templates use (`json`, `if`, `each`) are registered here in
//! versions that refuse a missing value, and a misspelt name fails the render.

use handlebars::{
    BlockContext, Context, Handlebars, Helper, HelperDef, HelperResult, Output, PathAndJson,
    RenderContext, RenderError, RenderErrorReason, Renderable,
};

/// A template and where it lives in the repository, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct Template {
    pub path: &'static str,
    source: &'static str,
}

pub const IAM_POLICY: Template = Template {
    path: "templates/iam-policy.json.hbs",
    source: include_str!("../../../templates/iam-policy.json.hbs"),
};
pub const TRUST_POLICY_IRSA: Template = Template {
    path: "templates/trust-policy-irsa.json.hbs",
    source: include_str!("../../../templates/trust-policy-irsa.json.hbs"),
};
pub const TRUST_POLICY_POD_IDENTITY: Template = Template {
    path: "templates/trust-policy-pod-identity.json.hbs",
    source: include_str!("../../../templates/trust-policy-pod-identity.json.hbs"),
};
pub const MANIFESTS: Template = Template {
    path: "templates/manifests.yaml.hbs",
    source: include_str!("../../../templates/manifests.yaml.hbs"),
};
pub const DASHBOARD: Template = Template {
    path: "dashboards/dashboard.json.hbs",
    source: include_str!("../../../dashboards/dashboard.json.hbs"),
};

/// Every template, compiled once into the shared registry.
const ALL: [Template; 5] = [
    IAM_POLICY,
    TRUST_POLICY_IRSA,
    TRUST_POLICY_POD_IDENTITY,
    MANIFESTS,
    DASHBOARD,
];

/// Renders `template` with `data`.
pub fn render(
    template: Template,
    data: &serde_json::Value,
) -> Result<String, handlebars::RenderError> {
    let known = ALL
        .iter()
        .any(|known| known.path == template.path && known.source == template.source);
    match compiled() {
        Some(registry) if known => registry.render(template.path, data),
        // Another template (the tests'), or one that does not parse: parsed here, for the
        // same output or error as ever.
        Some(_) | None => registry().render_template(template.source, data),
    }
}

/// The registry with every template compiled, once per process: parsing a template is
/// most of a render's time (pest, unoptimised in debug builds), and a fleet renders the
/// same templates for each of its clusters, several times each. `None` when one does not
/// parse (a bug the tests catch), and then each render parses its own.
fn compiled() -> Option<&'static Handlebars<'static>> {
    static COMPILED: std::sync::OnceLock<Option<Handlebars<'static>>> = std::sync::OnceLock::new();
    COMPILED
        .get_or_init(|| {
            let mut registry = registry();
            for template in ALL {
                registry
                    .register_template_string(template.path, template.source)
                    .ok()?;
            }
            Some(registry)
        })
        .as_ref()
}

/// A registry with our settings and helpers, and no template yet.
fn registry() -> Handlebars<'static> {
    let mut registry = Handlebars::new();
    registry.set_strict_mode(true);
    registry.register_escape_fn(handlebars::no_escape);
    registry.register_helper("json", Box::new(json_literal));
    registry.register_helper("if", Box::new(StrictIf));
    registry.register_helper("each", Box::new(StrictEachEntry));
    registry
}

/// The parameter `index` of `helper`, refused when it names nothing.
fn present_param<'a>(
    helper: &'a Helper<'_>,
    name: &'static str,
) -> Result<&'a PathAndJson<'a>, RenderError> {
    let value = helper
        .param(0)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex(name, 0))?;
    if value.is_value_missing() {
        return Err(RenderErrorReason::MissingVariable(value.relative_path().cloned()).into());
    }
    Ok(value)
}

/// `{{#if flag}}...{{else}}...{{/if}}` over a boolean that must exist.
struct StrictIf;

impl HelperDef for StrictIf {
    fn call<'reg: 'rc, 'rc>(
        &self,
        helper: &Helper<'rc>,
        registry: &'reg Handlebars<'reg>,
        context: &'rc Context,
        render_context: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let condition = present_param(helper, "if")?
            .value()
            .as_bool()
            .ok_or_else(|| RenderErrorReason::Other("#if takes a boolean".to_owned()))?;
        let branch = if condition {
            helper.template()
        } else {
            helper.inverse()
        };
        match branch {
            Some(template) => template.render(registry, context, render_context, out),
            None => Ok(()),
        }
    }
}

/// `{{#each map}}{{@key}}: {{json this}}{{/each}}` over an object or a list (keyed by the
/// index) that must exist.
struct StrictEachEntry;

impl HelperDef for StrictEachEntry {
    fn call<'reg: 'rc, 'rc>(
        &self,
        helper: &Helper<'rc>,
        registry: &'reg Handlebars<'reg>,
        context: &'rc Context,
        render_context: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        // A list is walked like a map keyed by the index, so one helper serves both.
        let entries: Vec<(String, serde_json::Value)> = match present_param(helper, "each")?.value()
        {
            serde_json::Value::Object(map) => map
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(index, value)| (index.to_string(), value.clone()))
                .collect(),
            _ => {
                return Err(
                    RenderErrorReason::Other("#each takes an object or a list".to_owned()).into(),
                );
            }
        };
        let Some(template) = helper.template() else {
            return Ok(());
        };
        for (key, value) in entries {
            let mut block = BlockContext::new();
            block.set_base_value(value);
            block.set_local_var("key", serde_json::Value::String(key));
            render_context.push_block(block);
            let rendered = template.render(registry, context, render_context, out);
            render_context.pop_block();
            rendered?;
        }
        Ok(())
    }
}

/// `{{json value}}` writes `value` as a JSON literal, quotes and escapes included. A JSON
/// string literal is also a valid YAML double-quoted scalar, so the same helper keeps both
/// kinds of output well formed whatever characters a value holds.
fn json_literal(
    helper: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let value = present_param(helper, "json")?;
    let literal = serde_json::to_string(value.value())
        .map_err(|error| RenderErrorReason::Other(error.to_string()))?;
    out.write(&literal)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE: Template = Template {
        path: "probe",
        source: "{{json present}} {{json missing}}",
    };

    #[test]
    fn a_missing_variable_is_an_error_not_an_empty_string() {
        let error = render(PROBE, &serde_json::json!({ "present": "x" }))
            .expect_err("strict mode must refuse a missing variable");
        assert!(error.to_string().contains("missing"), "{error}");
    }

    #[test]
    fn a_missing_condition_is_an_error_too() {
        let probe = Template {
            path: "probe",
            source: "{{#if missing}}yes{{/if}}",
        };
        assert!(render(probe, &serde_json::json!({})).is_err());
        assert_eq!(
            render(probe, &serde_json::json!({ "missing": true })).expect("renders"),
            "yes"
        );
    }

    #[test]
    fn each_walks_a_map_and_refuses_a_missing_one() {
        let probe = Template {
            path: "probe",
            source: "{{#each labels}}{{@key}}={{json this}};{{/each}}",
        };
        assert!(render(probe, &serde_json::json!({})).is_err());
        let text = render(
            probe,
            &serde_json::json!({ "labels": { "a": "1", "b": "2" } }),
        )
        .expect("renders");
        assert_eq!(text, r#"a="1";b="2";"#);
        let list = render(probe, &serde_json::json!({ "labels": ["x", "y"] })).expect("renders");
        assert_eq!(list, r#"0="x";1="y";"#);
        assert!(render(probe, &serde_json::json!({ "labels": 1 })).is_err());
    }

    #[test]
    fn values_are_written_as_escaped_literals() {
        let text = render(
            PROBE,
            &serde_json::json!({ "present": "a\"b<c>", "missing": 2 }),
        )
        .expect("renders");
        assert_eq!(text, r#""a\"b<c>" 2"#);
    }
}
