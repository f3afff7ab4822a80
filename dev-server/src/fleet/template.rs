//! What the fleet reads from `template.yaml`: each function's binary, timeout, memory and environment, the
//! API routes API Gateway sends to it (and whether they stream), and which functions run on a schedule or
//! from the table's stream. Reading the template itself keeps `make fleet` routing exactly as deployed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_yaml::Value;

use shared::state::BoxError;

/// A route of the REST API: `resource` as API Gateway names it (`/v1/keys/{key_id}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: String,
    pub resource: String,
    pub function: String,
    /// `ResponseTransferMode: RESPONSE_STREAM`: the function answers in Lambda's streaming format.
    pub streaming: bool,
}

/// An environment variable's value in the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    Literal(String),
    /// `!Ref Name`: a parameter or a resource, resolved by the fleet.
    Ref(String),
    /// `!Sub "text ${Name}"`.
    Sub(String),
    /// Anything else (`!If`, `!GetAtt`): the fleet must set the variable itself.
    Computed,
}

/// How a function is started, besides its routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    Api,
    Schedule,
    /// The main table's stream, through an event source mapping.
    TableStream(StreamMapping),
    /// Anything else the fleet does not drive (SNS, CloudFront).
    Other,
}

#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// The binary's name (`Metadata.BuildProperties.Binary`), also the function's name in the fleet.
    pub name: String,
    pub timeout: Duration,
    pub memory_mb: u64,
    pub env: BTreeMap<String, EnvValue>,
    pub triggers: Vec<Trigger>,
}

#[derive(Debug, Clone)]
pub struct Template {
    pub functions: Vec<FunctionSpec>,
    pub routes: Vec<Route>,
    /// Parameters' defaults.
    pub parameters: BTreeMap<String, String>,
    pub stage: String,
}

impl Template {
    pub fn read(path: &std::path::Path) -> Result<Self, BoxError> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, BoxError> {
        let doc: Value = serde_yaml::from_str(text)?;
        let parameters: BTreeMap<String, String> = doc
            .get("Parameters")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
            .filter_map(|(name, spec)| Some((name.as_str()?.to_owned(), scalar(spec.get("Default")?)?)))
            .collect();
        let globals = doc.get("Globals").and_then(|g| g.get("Function"));
        let mut functions = Vec::new();
        let mut routes = Vec::new();
        for (_, resource) in doc.get("Resources").and_then(Value::as_mapping).into_iter().flatten() {
            if resource.get("Type").and_then(Value::as_str) != Some("AWS::Serverless::Function") {
                continue;
            }
            let function = function_spec(resource, globals)?;
            routes.extend(api_routes(resource, &function.name));
            functions.push(function);
        }
        let stage = parameters.get("StageName").cloned().unwrap_or_else(|| "prod".into());
        Ok(Self { functions, routes, parameters, stage })
    }

    pub fn function(&self, name: &str) -> Option<&FunctionSpec> {
        self.functions.iter().find(|f| f.name == name)
    }
}

fn function_spec(resource: &Value, globals: Option<&Value>) -> Result<FunctionSpec, BoxError> {
    let name = resource
        .get("Metadata")
        .and_then(|m| m.get("BuildProperties"))
        .and_then(|b| b.get("Binary"))
        .and_then(Value::as_str)
        .ok_or("a function in template.yaml names no binary (Metadata.BuildProperties.Binary)")?
        .to_owned();
    let properties = resource.get("Properties");
    let number = |key: &str| {
        properties.and_then(|p| p.get(key)).or_else(|| globals.and_then(|g| g.get(key))).and_then(Value::as_u64)
    };
    let mut env = BTreeMap::new();
    for scope in [globals, properties] {
        let variables = scope.and_then(|s| s.get("Environment")).and_then(|e| e.get("Variables"));
        for (key, value) in variables.and_then(Value::as_mapping).into_iter().flatten() {
            if let Some(key) = key.as_str() {
                env.insert(key.to_owned(), env_value(value));
            }
        }
    }
    let triggers = properties
        .and_then(|p| p.get("Events"))
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
        .map(|(_, event)| trigger(event))
        .collect();
    Ok(FunctionSpec {
        name,
        timeout: Duration::from_secs(number("Timeout").unwrap_or(3)),
        memory_mb: number("MemorySize").unwrap_or(128),
        env,
        triggers,
    })
}

fn trigger(event: &Value) -> Trigger {
    match event.get("Type").and_then(Value::as_str) {
        Some("Api") => Trigger::Api,
        Some("Schedule" | "ScheduleV2") => Trigger::Schedule,
        Some("DynamoDB") => Trigger::TableStream(stream_mapping(event.get("Properties"))),
        _ => Trigger::Other,
    }
}

/// What an event source mapping on the table's stream hands its function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMapping {
    pub batch_size: usize,
    pub max_retries: u32,
    /// `FilterCriteria`'s patterns (a record goes to the function when any matches; none: every record).
    pub filters: Vec<serde_json::Value>,
}

fn stream_mapping(properties: Option<&Value>) -> StreamMapping {
    let number = |key: &str| properties.and_then(|p| p.get(key)).and_then(Value::as_u64);
    let filters = properties
        .and_then(|p| p.get("FilterCriteria"))
        .and_then(|f| f.get("Filters"))
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|f| f.get("Pattern").and_then(Value::as_str))
        .filter_map(|pattern| serde_json::from_str(pattern).ok())
        .collect();
    StreamMapping {
        batch_size: number("BatchSize").and_then(|n| usize::try_from(n).ok()).unwrap_or(100),
        max_retries: number("MaximumRetryAttempts").and_then(|n| u32::try_from(n).ok()).unwrap_or(10),
        filters,
    }
}

fn api_routes(resource: &Value, function: &str) -> Vec<Route> {
    let events = resource.get("Properties").and_then(|p| p.get("Events")).and_then(Value::as_mapping);
    events
        .into_iter()
        .flatten()
        .filter(|(_, event)| event.get("Type").and_then(Value::as_str) == Some("Api"))
        .filter_map(|(_, event)| {
            let properties = event.get("Properties")?;
            Some(Route {
                method: properties.get("Method")?.as_str()?.to_ascii_uppercase(),
                resource: properties.get("Path")?.as_str()?.to_owned(),
                function: function.to_owned(),
                streaming: properties.get("ResponseTransferMode").and_then(Value::as_str) == Some("RESPONSE_STREAM"),
            })
        })
        .collect()
}

fn env_value(value: &Value) -> EnvValue {
    if let Some(literal) = scalar(value) {
        return EnvValue::Literal(literal);
    }
    match value {
        Value::Tagged(tagged) if tagged.tag == "!Ref" => {
            tagged.value.as_str().map_or(EnvValue::Computed, |name| EnvValue::Ref(name.to_owned()))
        }
        Value::Tagged(tagged) if tagged.tag == "!Sub" => {
            tagged.value.as_str().map_or(EnvValue::Computed, |text| EnvValue::Sub(text.to_owned()))
        }
        _ => EnvValue::Computed,
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Matches a request path against a route's resource; returns the path parameters.
pub fn match_resource(resource: &str, path: &str) -> Option<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    let mut wanted = resource.trim_matches('/').split('/');
    let mut given = path.trim_matches('/').split('/');
    loop {
        match (wanted.next(), given.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') && !g.is_empty() => {
                params.insert(w[1..w.len() - 1].to_owned(), g.to_owned());
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Template {
        match Template::read(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))) {
            Ok(t) => t,
            Err(e) => unreachable!("template.yaml: {e}"),
        }
    }

    #[test]
    fn the_template_routes_inference_streaming_and_names_every_binary() {
        let t = template();
        let chat = t.routes.iter().find(|r| r.resource == "/v1/chat/completions");
        assert_eq!(
            chat.map(|r| (r.function.as_str(), r.method.as_str(), r.streaming)),
            Some(("inference", "POST", true))
        );
        let keys = t.routes.iter().find(|r| r.resource == "/v1/keys" && r.method == "GET");
        assert_eq!(keys.map(|r| (r.function.as_str(), r.streaming)), Some(("keys", false)));
        let inference = t.function("inference").map(|f| (f.timeout, f.memory_mb));
        assert_eq!(inference, Some((Duration::from_secs(300), 256)));
        // A function's own size over the Globals' (256).
        assert_eq!(t.function("exports").map(|f| f.memory_mb), Some(1024));
        assert_eq!(t.function("jobs").map(|f| f.triggers.contains(&Trigger::Schedule)), Some(true));
        let mailer = t.function("mailer").and_then(|f| {
            f.triggers.iter().find_map(|t| if let Trigger::TableStream(m) = t { Some(m.clone()) } else { None })
        });
        assert_eq!(mailer.as_ref().map(|m| (m.batch_size, m.max_retries, m.filters.len())), Some((10, 10, 1)));
        // Globals reach every function; a function's own variables come beside them.
        let wallet = t.function("wallet").map(|f| f.env.clone()).unwrap_or_default();
        assert_eq!(wallet.get("INFEREX_MAIN_TABLE"), Some(&EnvValue::Ref("MainTable".into())));
        assert_eq!(wallet.get("RAZORPAY_SECRET_ARN"), Some(&EnvValue::Ref("RazorpaySecret".into())));
        assert_eq!(t.parameters.get("StageName").map(String::as_str), Some("prod"));
    }

    #[test]
    fn resources_match_whole_segments_only() {
        let params = match_resource("/v1/keys/{key_id}", "/v1/keys/key_123");
        assert_eq!(params.and_then(|p| p.get("key_id").cloned()).as_deref(), Some("key_123"));
        assert!(match_resource("/v1/keys/{key_id}", "/v1/keys/").is_none());
        assert!(match_resource("/v1/keys/{key_id}", "/v1/keys/a/b").is_none());
        assert!(match_resource("/v1/keys", "/v1/keysx").is_none());
        assert_eq!(match_resource("/health", "/health").map(|p| p.len()), Some(0));
    }
}
