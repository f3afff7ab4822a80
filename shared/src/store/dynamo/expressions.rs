//! Items and conditions in DynamoDB's terms: attribute values, condition and update expressions with
//! unique placeholders, and the encoding of our items to attribute maps and back.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Map, Value};

use super::AttrMap;
use crate::store::{Condition, EXPIRES_AT, ExpiryChange, Item, PK, SK, StoreError, StoreResult, Update};

/// Builds expression attribute names and values with unique placeholders.
#[derive(Default)]
pub(super) struct Expr {
    names: HashMap<String, String>,
    values: AttrMap,
    live: Option<String>,
}

impl Expr {
    pub(super) fn name(&mut self, attr: &str) -> String {
        if let Some((placeholder, _)) = self.names.iter().find(|(_, v)| v.as_str() == attr) {
            return placeholder.clone();
        }
        let placeholder = format!("#n{}", self.names.len());
        self.names.insert(placeholder.clone(), attr.to_owned());
        placeholder
    }

    pub(super) fn value(&mut self, value: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    /// "Not expired", as one parenthesised OR-group (rendered once per expression).
    pub(super) fn live(&mut self, now: i64) -> String {
        if let Some(live) = &self.live {
            return live.clone();
        }
        let exp = self.name(EXPIRES_AT);
        let now = self.value(number(now));
        let live = format!("(attribute_not_exists({exp}) OR {exp} > {now})");
        self.live = Some(live.clone());
        live
    }

    /// Flattens a condition into conjuncts: simple comparisons or parenthesised OR-groups.
    fn conjuncts(&mut self, condition: &Condition, now: i64, out: &mut Vec<String>) -> StoreResult<()> {
        let push = |part: String, out: &mut Vec<String>| {
            if !out.contains(&part) {
                out.push(part);
            }
        };
        match condition {
            Condition::Always => {}
            Condition::NotExists => {
                let pk = self.name(PK);
                let exp = self.name(EXPIRES_AT);
                let now = self.value(number(now));
                push(format!("(attribute_not_exists({pk}) OR {exp} <= {now})"), out);
            }
            Condition::Exists => {
                let pk = self.name(PK);
                push(format!("attribute_exists({pk})"), out);
                push(self.live(now), out);
            }
            Condition::AttrEquals(attr, value) => {
                let n = self.name(attr);
                let v = self.value(to_attribute(value)?);
                push(format!("{n} = {v}"), out);
                push(self.live(now), out);
            }
            Condition::AttrAtLeast(attr, bound) => {
                let n = self.name(attr);
                let v = self.value(number(*bound));
                push(format!("{n} >= {v}"), out);
                push(self.live(now), out);
            }
            Condition::AttrAbsentOrEquals(attr, value) => {
                let pk = self.name(PK);
                let n = self.name(attr);
                let v = self.value(to_attribute(value)?);
                push(format!("attribute_exists({pk})"), out);
                push(format!("(attribute_not_exists({n}) OR {n} = {v})"), out);
                push(self.live(now), out);
            }
            Condition::AbsentOrEquals(attr, value) => {
                let pk = self.name(PK);
                let exp = self.name(EXPIRES_AT);
                let now = self.value(number(now));
                let n = self.name(attr);
                let v = self.value(to_attribute(value)?);
                push(format!("(attribute_not_exists({pk}) OR {exp} <= {now} OR {n} = {v})"), out);
            }
            Condition::All(all) => {
                for c in all {
                    self.conjuncts(c, now, out)?;
                }
            }
        }
        Ok(())
    }

    /// Renders a condition; None when it places no requirement. DynamoDB rejects redundant parentheses,
    /// so a lone OR-group loses its outer pair.
    pub(super) fn condition(&mut self, condition: &Condition, now: i64) -> StoreResult<Option<String>> {
        let mut parts = Vec::new();
        self.conjuncts(condition, now, &mut parts)?;
        Ok(match parts.as_slice() {
            [] => None,
            [only] => Some(only.strip_prefix('(').and_then(|s| s.strip_suffix(')')).unwrap_or(only).to_owned()),
            _ => Some(parts.join(" AND ")),
        })
    }

    pub(super) fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    pub(super) fn values(&self) -> Option<AttrMap> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

fn number(n: i64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

fn to_attribute(value: &Value) -> StoreResult<AttributeValue> {
    serde_dynamo::to_attribute_value(value).map_err(|e| StoreError::Malformed(e.to_string()))
}

pub(super) fn key(pk: &str, sk: &str) -> AttrMap {
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(pk.to_owned())),
        (SK.to_owned(), AttributeValue::S(sk.to_owned())),
    ])
}

pub(super) fn encode(item: &Item) -> StoreResult<AttrMap> {
    let mut map: AttrMap = serde_dynamo::to_item(&item.attrs).map_err(|e| StoreError::Malformed(e.to_string()))?;
    map.extend(key(&item.pk, &item.sk));
    if let Some(at) = item.expires_at {
        map.insert(EXPIRES_AT.to_owned(), number(at));
    }
    Ok(map)
}

pub(super) fn decode(mut map: AttrMap) -> StoreResult<Item> {
    let mut string_attr = |name: &str| match map.remove(name) {
        Some(AttributeValue::S(s)) => Ok(s),
        other => Err(StoreError::Malformed(format!("{name} is {other:?}"))),
    };
    let pk = string_attr(PK)?;
    let sk = string_attr(SK)?;
    let expires_at = match map.remove(EXPIRES_AT) {
        None => None,
        Some(AttributeValue::N(n)) => {
            Some(n.parse::<i64>().map_err(|e| StoreError::Malformed(format!("{EXPIRES_AT}: {e}")))?)
        }
        Some(other) => return Err(StoreError::Malformed(format!("{EXPIRES_AT} is {other:?}"))),
    };
    let attrs: Map<String, Value> =
        serde_dynamo::from_item(map).map_err(|e| StoreError::Malformed(format!("{pk}/{sk}: {e}")))?;
    Ok(Item { pk, sk, attrs, expires_at })
}

/// The parts of an UpdateItem request.
pub(super) struct UpdateParts {
    pub(super) update_expression: String,
    pub(super) condition_expression: String,
    pub(super) expr: Expr,
}

pub(super) fn update_parts(update: &Update, now: i64) -> StoreResult<UpdateParts> {
    let mut expr = Expr::default();
    let mut sets = Vec::new();
    for (name, value) in &update.set {
        let n = expr.name(name);
        let v = expr.value(to_attribute(value)?);
        sets.push(format!("{n} = {v}"));
    }
    let mut removes: Vec<String> = update.remove.iter().map(|name| expr.name(name)).collect();
    match update.expiry {
        ExpiryChange::Keep => {}
        ExpiryChange::Set(at) => {
            let n = expr.name(EXPIRES_AT);
            let v = expr.value(number(at));
            sets.push(format!("{n} = {v}"));
        }
        ExpiryChange::Clear => removes.push(expr.name(EXPIRES_AT)),
    }
    let adds: Vec<String> = update
        .add
        .iter()
        .map(|(name, delta)| {
            let n = expr.name(name);
            let v = expr.value(number(*delta));
            format!("{n} {v}")
        })
        .collect();
    let mut clauses = Vec::new();
    if !sets.is_empty() {
        clauses.push(format!("SET {}", sets.join(", ")));
    }
    if !adds.is_empty() {
        clauses.push(format!("ADD {}", adds.join(", ")));
    }
    if !removes.is_empty() {
        clauses.push(format!("REMOVE {}", removes.join(", ")));
    }
    if clauses.is_empty() {
        return Err(StoreError::Backend("an update must change something".into()));
    }
    // Updates never create items: the item must exist and be live, on top of the caller's condition.
    let required = Condition::All(vec![Condition::Exists, update.condition.clone()]);
    let condition_expression = expr.condition(&required, now)?.unwrap_or_default();
    Ok(UpdateParts { update_expression: clauses.join(" "), condition_expression, expr })
}
