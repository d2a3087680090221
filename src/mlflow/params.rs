//! Classification, second step: request parameters read the way the policy will see them. JSON bodies are parsed
//! strictly (UTF-8 without BOM, one top-level object, no duplicate keys) because MLflow's parser accepts encodings
//! and duplicates that a lenient reader would read differently; the forwarded body is re-serialised from exactly
//! what was parsed.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a body was refused; the message is shown to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct BodyError(pub String);

/// Parses a JSON request body that must be one object with unique keys, in UTF-8 without a byte-order mark.
pub fn parse_json_object(bytes: &[u8]) -> Result<Map<String, Value>, BodyError> {
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) || bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(BodyError("the JSON body starts with a byte-order mark; send plain UTF-8".into()));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| BodyError("the JSON body is not valid UTF-8".into()))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let StrictValue(value) = StrictValue::deserialize(&mut de)
        .map_err(|e| BodyError(format!("the request body is not acceptable JSON: {e}")))?;
    de.end().map_err(|e| BodyError(format!("the request body has trailing data: {e}")))?;
    match value {
        Value::Object(map) => Ok(map),
        Value::String(_) => Err(BodyError("the JSON body is a string (double-encoded JSON?); send an object".into())),
        _ => Err(BodyError("the JSON body must be an object".into())),
    }
}

/// Query parameters grouped by name, in first-seen order, each with every value in order (MLflow reads the first
/// value of a scalar field; repeated fields such as `order_by` use them all).
pub fn query_map(pairs: &[(String, String)]) -> Map<String, Value> {
    let mut map = Map::new();
    for (k, v) in pairs {
        let entry = map.entry(k.clone()).or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(values) = entry {
            values.push(Value::String(v.clone()));
        }
    }
    map
}

/// A JSON value whose objects had no duplicate keys.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = StrictValue;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<StrictValue, E> {
        serde_json::Number::from_f64(v)
            .map(|n| StrictValue(Value::Number(n)))
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrictValue, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(StrictValue(Value::Array(out)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrictValue, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let StrictValue(value) = access.next_value()?;
            if map.insert(key.clone(), value).is_some() {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
        }
        Ok(StrictValue(Value::Object(map)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_parse_and_keep_key_order() {
        let m = parse_json_object(br#"{"name":"m","version":"1","stage":"Production"}"#).unwrap_or_default();
        assert_eq!(m.keys().cloned().collect::<Vec<_>>(), ["name", "version", "stage"]);
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(parse_json_object(br#"{"name":"a","name":"b"}"#).is_err());
        assert!(parse_json_object(br#"{"tags":[{"key":"a","key":"b"}]}"#).is_err());
    }

    #[test]
    fn odd_encodings_and_non_objects_are_refused() {
        assert!(parse_json_object(b"\xEF\xBB\xBF{\"name\":\"a\"}").is_err());
        assert!(parse_json_object(b"\xFF\xFE{\x00}\x00").is_err());
        assert!(parse_json_object(br#""{\"name\":\"a\"}""#).is_err());
        assert!(parse_json_object(b"[1]").is_err());
        assert!(parse_json_object(b"{\"a\":1} {}").is_err());
        assert!(parse_json_object(b"{\"a\":NaN}").is_err());
    }

    #[test]
    fn query_values_are_grouped_in_order() {
        let pairs = vec![("name".to_string(), "m1".to_string()), ("name".to_string(), "m2".to_string())];
        assert_eq!(query_map(&pairs)["name"], serde_json::json!(["m1", "m2"]));
    }
}
