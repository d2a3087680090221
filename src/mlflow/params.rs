//! Classification, second step: request parameters read the way the policy will see them. JSON bodies are parsed
//! strictly (UTF-8 without BOM, one top-level object, no duplicate keys) because MLflow's parser accepts encodings
//! and duplicates that a lenient reader would read differently; the forwarded body is re-serialised from exactly
//! what was parsed. Size is bounded while parsing (nesting depth, entries per object, items per array, values in
//! all), so that a body with half a million keys costs a refusal, not seconds of CPU.

use std::cell::Cell;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Deepest nesting of objects and arrays accepted in a JSON body (MLflow's bodies nest four or five levels).
pub const MAX_JSON_DEPTH: usize = 32;
/// Most entries in one JSON object.
pub const MAX_JSON_OBJECT_ENTRIES: usize = 10_000;
/// Most items in one JSON array (MLflow's `LogBatch` takes at most 1,000 metrics).
pub const MAX_JSON_ARRAY_ITEMS: usize = 10_000;
/// Most values (scalars, objects and arrays) in one JSON body.
pub const MAX_JSON_VALUES: usize = 100_000;

/// Why a body (or the parameters read from it or from the query) was refused; the message is shown to the client.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// A UTF-8, UTF-16 or UTF-32 byte-order mark.
    #[error("the JSON body starts with a byte-order mark; send plain UTF-8")]
    ByteOrderMark,
    /// Not UTF-8.
    #[error("the JSON body is not valid UTF-8")]
    NotUtf8(#[source] std::str::Utf8Error),
    /// Not JSON, duplicate keys, or over the structural limits.
    #[error("the request body is not acceptable JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// Data after the JSON value.
    #[error("the request body has trailing data: {0}")]
    TrailingData(#[source] serde_json::Error),
    /// A JSON string (double-encoded JSON?).
    #[error("the JSON body is a string (double-encoded JSON?); send an object")]
    DoubleEncoded,
    /// Another JSON value than an object.
    #[error("the JSON body must be an object")]
    NotAnObject,
    /// The camelCase and snake_case spellings of one field with different values.
    #[error("the body sets both {from:?} and {to:?}; send one spelling")]
    BothSpellings {
        /// The camelCase key.
        from: String,
        /// The snake_case key.
        to: String,
    },
    /// A target field repeated in the query with different values.
    #[error("the query string gives {0:?} more than one value")]
    AmbiguousQuery(&'static str),
}

/// Parses a JSON request body that must be one object with unique keys, in UTF-8 without a byte-order mark.
pub fn parse_json_object(bytes: &[u8]) -> Result<Map<String, Value>, BodyError> {
    parse_json_object_counted(bytes).map(|(map, _)| map)
}

/// [`parse_json_object`], also returning how many values (scalars, objects and arrays) the body holds, so that
/// the caller can account for the memory of the parsed form.
pub fn parse_json_object_counted(bytes: &[u8]) -> Result<(Map<String, Value>, usize), BodyError> {
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) || bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(BodyError::ByteOrderMark);
    }
    let text = std::str::from_utf8(bytes).map_err(BodyError::NotUtf8)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let values = Cell::new(0);
    let StrictValue(value) = Strict { depth: 0, values: &values }.deserialize(&mut de).map_err(BodyError::Json)?;
    de.end().map_err(BodyError::TrailingData)?;
    match value {
        Value::Object(map) => Ok((map, values.get())),
        Value::String(_) => Err(BodyError::DoubleEncoded),
        _ => Err(BodyError::NotAnObject),
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

/// Reads one value at `depth`, counting every value of the document in `values`.
#[derive(Clone, Copy)]
struct Strict<'a> {
    depth: usize,
    values: &'a Cell<usize>,
}

impl Strict<'_> {
    fn count<E: de::Error>(self) -> Result<(), E> {
        let n = self.values.get() + 1;
        self.values.set(n);
        if n > MAX_JSON_VALUES {
            return Err(E::custom(format!("the body has more than {MAX_JSON_VALUES} values (mlflow-gate's limit)")));
        }
        Ok(())
    }

    fn child<E: de::Error>(&self) -> Result<Self, E> {
        if self.depth >= MAX_JSON_DEPTH {
            return Err(E::custom(format!("the body nests deeper than {MAX_JSON_DEPTH} levels (mlflow-gate's limit)")));
        }
        Ok(Strict { depth: self.depth + 1, values: self.values })
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = StrictValue;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<StrictValue, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = StrictValue;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<StrictValue, E> {
        self.count()?;
        Ok(StrictValue(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrictValue, E> {
        self.count()?;
        Ok(StrictValue(Value::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrictValue, E> {
        self.count()?;
        Ok(StrictValue(Value::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<StrictValue, E> {
        self.count()?;
        serde_json::Number::from_f64(v)
            .map(|n| StrictValue(Value::Number(n)))
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<StrictValue, E> {
        self.count()?;
        Ok(StrictValue(Value::String(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<StrictValue, E> {
        self.count()?;
        Ok(StrictValue(Value::String(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<StrictValue, E> {
        self.count()?;
        Ok(StrictValue(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrictValue, A::Error> {
        self.count()?;
        let child = self.child()?;
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element_seed(child)? {
            if out.len() >= MAX_JSON_ARRAY_ITEMS {
                return Err(de::Error::custom(format!(
                    "an array has more than {MAX_JSON_ARRAY_ITEMS} items (mlflow-gate's limit)"
                )));
            }
            out.push(v);
        }
        Ok(StrictValue(Value::Array(out)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrictValue, A::Error> {
        self.count()?;
        let child = self.child()?;
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.len() >= MAX_JSON_OBJECT_ENTRIES {
                return Err(de::Error::custom(format!(
                    "an object has more than {MAX_JSON_OBJECT_ENTRIES} keys (mlflow-gate's limit)"
                )));
            }
            let StrictValue(value) = access.next_value_seed(child)?;
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
    fn bodies_past_the_size_caps_are_refused() {
        let keys = |n: usize| {
            let fields: Vec<String> = (0..n).map(|i| format!("\"k{i}\":1")).collect();
            format!("{{{}}}", fields.join(","))
        };
        assert!(parse_json_object(keys(MAX_JSON_OBJECT_ENTRIES).as_bytes()).is_ok());
        let err =
            parse_json_object(keys(MAX_JSON_OBJECT_ENTRIES + 1).as_bytes()).err().unwrap_or(BodyError::NotAnObject);
        assert!(err.to_string().contains("more than 10000 keys"), "{err}");
        // Many keys spread over small arrays, each within its own cap: refused by the total count.
        let many: Vec<String> = (0..5_000).map(|i| format!("\"o{i}\":[{}]", vec!["1"; 25].join(","))).collect();
        let err =
            parse_json_object(format!("{{{}}}", many.join(",")).as_bytes()).err().unwrap_or(BodyError::NotAnObject);
        assert!(err.to_string().contains("more than 100000 values"), "{err}");
        let items = format!("{{\"a\":[{}]}}", vec!["0"; MAX_JSON_ARRAY_ITEMS + 1].join(","));
        assert!(parse_json_object(items.as_bytes()).is_err());
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(MAX_JSON_DEPTH), "]".repeat(MAX_JSON_DEPTH));
        let err = parse_json_object(deep.as_bytes()).err().unwrap_or(BodyError::NotAnObject);
        assert!(err.to_string().contains("nests deeper"), "{err}");
        let fits = format!("{{\"a\":{}{}}}", "[".repeat(MAX_JSON_DEPTH - 1), "]".repeat(MAX_JSON_DEPTH - 1));
        assert!(parse_json_object(fits.as_bytes()).is_ok());
    }

    #[test]
    fn query_values_are_grouped_in_order() {
        let pairs = vec![("name".to_string(), "m1".to_string()), ("name".to_string(), "m2".to_string())];
        assert_eq!(query_map(&pairs)["name"], serde_json::json!(["m1", "m2"]));
    }
}
