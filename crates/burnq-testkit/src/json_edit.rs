//! Edits of a JSON document for the hostile-input tests (burnq-quant's model `meta`, and
//! burnq-calib's `calibration.json`): replace, remove or add a node anywhere, with values at
//! the edges of the usual field types.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

/// One edit of a JSON document.
#[derive(Debug, Clone)]
pub enum JsonEdit {
    /// Replace one node (any depth, the root included) by a value.
    Replace(Index, Value),
    /// Remove one object member or array element.
    Remove(Index),
    /// Append a value to an array, add a member to an object, or make a scalar an array.
    Append(Index, Value),
}

/// JSON pointers of every node of `value`, in post-order (the root last).
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointers(item, format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                // RFC 6901 escapes, so that any key can be addressed.
                let key = key.replace('~', "~0").replace('/', "~1");
                pointers(item, format!("{at}/{key}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

impl JsonEdit {
    /// Applies the edit to `doc` (the node is drawn among all nodes of `doc`) and describes
    /// it, e.g. `replace /layers/0/act_max by 256`.
    pub fn apply(&self, doc: &mut Value) -> String {
        let mut all = Vec::new();
        pointers(doc, String::new(), &mut all);
        let node = |at: &Index| all[at.index(all.len())].clone();
        match self {
            JsonEdit::Replace(at, v) => {
                let pointer = node(at);
                *doc.pointer_mut(&pointer).unwrap() = v.clone();
                format!("replace {pointer:?} by {v}")
            }
            JsonEdit::Remove(at) => {
                let pointer = node(at);
                let Some((parent, last)) = pointer.rsplit_once('/') else {
                    return "remove the root (no-op)".into();
                };
                match doc.pointer_mut(parent).unwrap() {
                    Value::Array(items) => {
                        items.remove(last.parse().unwrap());
                    }
                    Value::Object(map) => {
                        map.remove(&last.replace("~1", "/").replace("~0", "~"));
                    }
                    _ => unreachable!("a pointer's parent is a container"),
                }
                format!("remove {pointer:?}")
            }
            JsonEdit::Append(at, v) => {
                let pointer = node(at);
                match doc.pointer_mut(&pointer).unwrap() {
                    Value::Array(items) => items.push(v.clone()),
                    Value::Object(map) => {
                        map.insert("extra".into(), v.clone());
                    }
                    other => *other = Value::Array(vec![other.clone(), v.clone()]),
                }
                format!("append {v} to {pointer:?}")
            }
        }
    }
}

/// Values at the edges of the usual field types (integers around `u8`, `i32`, `i64`, `u64`;
/// floats of every class JSON can carry, and beyond `f32`), strings, and small arrays.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop::sample::select(vec![
            0i64,
            1,
            -1,
            2,
            8,
            9,
            255,
            256,
            1 << 30,
            i64::from(i32::MAX),
            i64::from(i32::MIN),
            i64::MAX,
            i64::MIN,
        ])
        .prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        any::<i64>().prop_map(Value::from),
        // JSON has no NaN or infinity; 1e39 overflows f32.
        (prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO)
            .prop_map(Value::from),
        Just(Value::from(1e39)),
        Just(Value::from(-1e39)),
        "[a-z_0-9-]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 16, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(Value::Array)
    })
}

/// JSON edits, mostly replacements.
pub fn json_edit() -> impl Strategy<Value = JsonEdit> {
    prop_oneof![
        3 => (any::<Index>(), json_value()).prop_map(|(i, v)| JsonEdit::Replace(i, v)),
        1 => any::<Index>().prop_map(JsonEdit::Remove),
        1 => (any::<Index>(), json_value()).prop_map(|(i, v)| JsonEdit::Append(i, v)),
    ]
}
