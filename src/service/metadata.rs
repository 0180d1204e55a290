//! `user_metadata` and `app_metadata`: a JSON object each, checked before it is stored.
//! The user edits the first (`PATCH /v1/auth/me`), only administrators the second.

use serde_json::{Map, Value};

use super::AuthError;
use crate::domain::FieldError;

/// The most a metadata object may take, as compact JSON.
pub const MAX_METADATA_BYTES: usize = 4096;
/// The deepest nesting of objects and arrays inside it.
const MAX_DEPTH: usize = 8;
/// The longest key at any level.
const MAX_KEY_CHARS: usize = 128;

/// Checks `value` as the metadata field `field` and gives its stored text.
pub fn metadata_text(field: &str, value: &Value) -> Result<String, AuthError> {
    let invalid = |m: String| AuthError::Validation(vec![FieldError::new(field, m)]);
    let Value::Object(map) = value else {
        return Err(invalid("must be a JSON object".into()));
    };
    if let Some(problem) = check(map, 1) {
        return Err(invalid(problem));
    }
    let text = value.to_string();
    if text.len() > MAX_METADATA_BYTES {
        return Err(invalid(format!(
            "must be at most {MAX_METADATA_BYTES} bytes as JSON (is {})",
            text.len()
        )));
    }
    Ok(text)
}

fn check(map: &Map<String, Value>, depth: usize) -> Option<String> {
    for (key, value) in map {
        if key.is_empty() || key.chars().count() > MAX_KEY_CHARS {
            return Some(format!("keys must be 1 to {MAX_KEY_CHARS} characters"));
        }
        if let Some(problem) = check_value(value, depth) {
            return Some(problem);
        }
    }
    None
}

fn check_value(value: &Value, depth: usize) -> Option<String> {
    match value {
        Value::Object(_) | Value::Array(_) if depth >= MAX_DEPTH => {
            Some(format!("must nest at most {MAX_DEPTH} levels deep"))
        }
        Value::Object(inner) => check(inner, depth + 1),
        Value::Array(items) => items.iter().find_map(|v| check_value(v, depth + 1)),
        _ => None,
    }
}

/// The most the custom claims of one access token may take, as JSON.
pub const MAX_CUSTOM_CLAIMS_BYTES: usize = 1024;

/// The claims `names` picks from stored `app_metadata`, in the order configured, as long as
/// they fit [`MAX_CUSTOM_CLAIMS_BYTES`] (one that does not is left out, and logged). `None`
/// when there is nothing to add: no names, or metadata without any of them.
pub fn custom_claims(names: &[String], app_metadata: &str) -> Option<Map<String, Value>> {
    if names.is_empty() || app_metadata == "{}" {
        return None;
    }
    let Ok(Value::Object(mut metadata)) = serde_json::from_str::<Value>(app_metadata) else {
        return None;
    };
    let mut claims = Map::new();
    let mut size = 2;
    for name in names {
        let Some(value) = metadata.remove(name) else {
            continue;
        };
        // `"name":value,`
        let cost = name.len() + 4 + value.to_string().len();
        if size + cost > MAX_CUSTOM_CLAIMS_BYTES {
            tracing::warn!(claim = %name, "custom claim left out of an access token: over the size bound");
            continue;
        }
        size += cost;
        claims.insert(name.clone(), value);
    }
    (!claims.is_empty()).then_some(claims)
}

/// Stored metadata as JSON (an object; a row that is not, edited by hand, reads as empty).
pub fn metadata_value(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::Object(Map::new()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn objects_within_bounds_only() {
        assert_eq!(
            metadata_text("m", &json!({"a": [1, {"b": null}]})).unwrap(),
            r#"{"a":[1,{"b":null}]}"#
        );
        for bad in [
            json!([1]),
            json!("x"),
            json!(null),
            json!({"": 1}),
            json!({"k": "x".repeat(MAX_METADATA_BYTES)}),
            json!({"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":1}}}}}}}}}),
        ] {
            assert!(metadata_text("m", &bad).is_err(), "{bad}");
        }
        assert_eq!(metadata_value("not json"), json!({}));
    }

    #[test]
    fn custom_claims_are_picked_in_order_within_the_bound() {
        let names = ["tenant".to_string(), "plan".to_string(), "big".to_string()];
        let stored = json!({"tenant": "t1", "other": 1, "big": "x".repeat(2000)}).to_string();
        let claims = custom_claims(&names, &stored).unwrap();
        assert_eq!(Value::Object(claims), json!({"tenant": "t1"}));
        assert!(custom_claims(&names, "{}").is_none());
        assert!(custom_claims(&[], &stored).is_none());
        assert!(custom_claims(&names, r#"{"other":1}"#).is_none());
    }
}
